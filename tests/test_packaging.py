"""What ``pip install .`` puts into site-packages: ``protolib`` alone (the app inside it, as ``protolib/_app``), the
dist-info and the console script; and ``protoscope app`` serves the installed app from any folder."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from protolib import app_files
from tests.browser import CHROMIUM, WAIT, free_port, wait_healthy

ROOT = Path(__file__).resolve().parents[1]
APP_PACKAGES = {"protolib._app": ".", "protolib._app.pages": "pages", "protolib._app.pages.common": "pages/common"}


def setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_the_package_list_is_every_subpackage_of_protolib_and_the_app():
    """The list is explicit (the app is mapped under protolib): a new subpackage must not be left out of it."""
    config = setuptools_config()
    listed = config["packages"]
    assert len(listed) == len(set(listed))
    assert set(listed) == set(find_packages(str(ROOT), include=["protolib*"])) | set(APP_PACKAGES)
    assert config["package-dir"] == APP_PACKAGES
    assert "py-modules" not in config


def test_only_the_app_is_swept_into_protolib_app():
    """protolib._app is the top of the clone: every module there, and every package under pages/, is installed."""
    assert sorted(path.name for path in ROOT.glob("*.py")) == ["app.py"]
    folders = {path.parent.relative_to(ROOT).as_posix() for path in (ROOT / "pages").rglob("*.py")}
    assert folders == {"pages", "pages/common"}


def test_app_script_prefers_the_installed_app_then_the_clone(tmp_path, monkeypatch):
    assert app_files.app_script() == ROOT / "app.py"  # this clone (and an editable install: no protolib/_app on disk)
    library = tmp_path / "site" / "protolib"
    monkeypatch.setattr(app_files, "__file__", str(library / "app_files.py"))
    with pytest.raises(FileNotFoundError, match=r"the protoscope app \(app.py and pages/\) is not installed"):
        app_files.app_script()
    (library / "_app" / "pages" / "common").mkdir(parents=True)
    (library / "_app" / "app.py").write_text("")
    assert app_files.app_script() == library / "_app" / "app.py"
    (tmp_path / "site" / "app.py").write_text("")  # a clone's app.py beside it does not win over the installed one
    (tmp_path / "site" / "pages" / "common").mkdir(parents=True)
    assert app_files.app_script() == library / "_app" / "app.py"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install --target`` of a copy of this clone (so that the build leaves nothing in the tree)."""
    tmp = tmp_path_factory.mktemp("install")
    # the clone's sources as git sees them (tracked, or new and not ignored): no venv, cache or run folder
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():
            (tmp / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tmp / "src" / name)
    target = tmp / "site-packages"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*command, "--target", str(target), str(tmp / "src")], check=True, timeout=300)
    return target


def installed_env(target: Path, home: Path) -> dict[str, str]:
    """Only the installed copy of protolib importable (the dependencies come from this environment); user folders in
    ``home``."""
    env = dict(os.environ, PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    env.update(XDG_DATA_HOME=str(home / "data"), XDG_CACHE_HOME=str(home / "cache"))
    for name in ("PROTOLIB_DATA", "PROTOLIB_DATA_ROOTS", "PROTOLIB_RUNS", "PROTOLIB_CACHE", "PROTOLIB_UPLOADS"):
        env.pop(name, None)
    return env


@pytest.mark.slow
def test_pip_install_adds_protolib_alone_with_the_app_inside(installed, tmp_path):
    top = sorted(path.name for path in installed.iterdir())
    assert top[:2] == ["bin", "protolib"] and len(top) == 3 and top[2].startswith("protoscope-") and top[2].endswith(".dist-info")
    assert (installed / "bin" / "protoscope").is_file()
    app = installed / "protolib" / "_app"
    assert sorted(path.name for path in app.iterdir() if path.name != "__pycache__") == ["app.py", "pages"]
    assert (app / "app.py").read_bytes() == (ROOT / "app.py").read_bytes()
    assert sorted(p.relative_to(app).as_posix() for p in app.rglob("*.py")) == sorted(
        p.relative_to(ROOT).as_posix() for p in [ROOT / "app.py", *(ROOT / "pages").rglob("*.py")]
    )
    # from an unrelated folder: the installed library finds the installed app, whose folder (put on sys.path by
    # Streamlit, as here) holds the pages it imports
    check = (
        "import sys, protolib; from protolib.app_files import app_script; script = app_script(); "
        "sys.path.insert(0, str(script.parent)); import pages.common; print(protolib.__file__, script, pages.common.__file__)"
    )
    env = installed_env(installed, tmp_path)
    out = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = [installed / "protolib" / "__init__.py", app / "app.py", app / "pages" / "common" / "__init__.py"]
    assert out.stdout.split() == [str(path) for path in expected]


@pytest.mark.slow
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")
def test_protoscope_app_serves_the_installed_app(installed, tmp_path, browser):
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "protolib", "app", "--", "--server.port", str(port), "--server.headless", "true"],
            cwd=tmp_path,
            env=installed_env(installed, tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # `protoscope app` starts Streamlit as its child: both are stopped as a group
        )
    try:
        url = f"http://localhost:{port}"
        assert wait_healthy(url, server, 90), "the app did not start:\n" + log.read_text()[-3000:]
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(url, timeout=WAIT)
            page.get_by_role("heading", name="Decompose").wait_for(timeout=WAIT)  # the app's first page, drawn
        finally:
            context.close()
    finally:
        stop_group(server)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a process started in its own session and every process it started, within a deadline."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)  # anyone of the group still there?
        except ProcessLookupError:
            break
        process.poll()  # reaps the leader, so that it does not linger as a zombie of the group
        time.sleep(0.2)
    else:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)
