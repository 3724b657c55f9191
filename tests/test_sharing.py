"""One server, many sessions: the data folders a session may open, upload quotas, clean-up of what
unused sessions left, who sees which run (private, published, damaged), publishing, the shared demo,
and the queue that runs heavy jobs one at a time. Streamlit-free parts first, then the app (AppTest).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from protolib import config, job_queue
from protolib.backbones.probe_models import PROBE_FORMAT, PROBE_MANIFEST, probe_name
from protolib.config import DataFolderRefused, SharingLimits, allowed_data_roots, check_data_folder
from protolib.data.uploads import UploadError
from protolib.job_queue import JobQueue, ordinal
from protolib.runs import Run, RunError, load_run, save_run
from protolib.runs.checks import manifest_problem
from protolib.runs.listing import checked_runs
from protolib.runs.schema import MANIFEST
from protolib.workspace import Workspace, cleanup, demo_run
from protolib.workspace.cleanup import clean_up
from protolib.workspace.publishing import publish
from protolib.workspace.quotas import QuotaExceeded
from tests.apptest import CLASSES, DATA, button, png, start, texts
from tests.helpers import wait_until

pytestmark = pytest.mark.usefixtures("navigation_mode")  # the app as AppTest runs it, in navigation mode

HOUR = 3600.0


def environ(tmp_path: Path, **extra) -> dict[str, str]:
    return {
        "PROTOLIB_RUNS": str(tmp_path / "runs"),
        "PROTOLIB_UPLOADS": str(tmp_path / "uploads"),
        "PROTOLIB_CACHE": str(tmp_path / "cache"),
        **extra,
    }


def fake_run(folder: Path, images: dict | None = None, **manifest) -> Path:
    """A small consistent run (2 classes, k = 2, 4 dimensions) saved at ``folder``; no backbone needed."""
    C, k, D = 2, 2, 4
    generator = torch.Generator().manual_seed(0)
    base = {
        "backbone": "efficientnet_lite0",
        "fingerprint": "f",
        "k": k,
        "strategy": "optimized",
        "classes": [{"label": i, "name": f"class {i}", "folder": f"c{i}", "n_images": 1} for i in range(C)],
        "images": images or {},
    }
    run = Run(
        base | manifest,
        torch.arange(C),
        torch.rand(C, k, D, generator=generator),
        torch.ones(C, k),
        {"optimized": torch.rand(C, k, D, generator=generator)},
        torch.zeros(C),
        torch.ones(C, k),
    )
    return save_run(run, folder)


# -- which data folders may be opened ---------------------------------------------------------------
def test_allowed_roots_come_from_config(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    env_ = {
        "PROTOLIB_DATA": str(a),
        "PROTOLIB_DATA_ROOTS": f"{b}{os.pathsep}{tmp_path / 'c'}{os.pathsep}",
        "PROTOLIB_DEMOS": str(tmp_path / "demos"),
    }
    assert allowed_data_roots(env_) == [config.SAMPLE_DATA, tmp_path / "demos", a, b, tmp_path / "c"]
    assert allowed_data_roots({}) == [config.SAMPLE_DATA, config.demos_dir({})]


def test_data_folders_outside_the_roots_are_refused(tmp_path):
    env_ = environ(tmp_path, PROTOLIB_DATA_ROOTS=str(tmp_path / "team"))
    team = tmp_path / "team" / "birds"
    team.mkdir(parents=True)
    assert check_data_folder(config.SAMPLE_DATA, environ=env_) == config.SAMPLE_DATA
    assert check_data_folder(config.SAMPLE_DATA / "train", environ=env_) == config.SAMPLE_DATA / "train"
    assert check_data_folder(str(team), environ=env_) == team.resolve()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "team" / "escape").symlink_to(outside)  # a link inside a root to a folder outside it
    (tmp_path / "team" / "inside").symlink_to(team)  # a link that stays inside
    assert check_data_folder(tmp_path / "team" / "inside", environ=env_) == team.resolve()
    for refused in [
        "/etc",
        "/",
        str(outside),
        f"{config.SAMPLE_DATA}/../../../../../../etc",
        f"{tmp_path / 'team'}/../outside",
        str(tmp_path / "team" / "escape"),
        str(tmp_path / "team" / "escape" / "x"),
        "relative/folder",
        "",
        "  ",
        "/tmp/a\x00b",
    ]:
        with pytest.raises(DataFolderRefused) as caught:
            check_data_folder(refused, environ=env_)
        assert "cannot be opened here" in str(caught.value) or "no data folder" in str(caught.value) or "NUL" in str(caught.value)
    # the same message whether the folder exists or not: the box tells nobody what is on the server
    with pytest.raises(DataFolderRefused, match="cannot be opened here") as missing:
        check_data_folder("/no/such/folder", environ=env_)
    with pytest.raises(DataFolderRefused, match="cannot be opened here") as existing:
        check_data_folder("/usr", environ=env_)
    assert str(missing.value).replace("/no/such/folder", "X") == str(existing.value).replace("/usr", "X")


def test_a_session_opens_its_own_uploads_and_no_one_elses(tmp_path):
    # even when an allowed root contains the uploads folder, each session opens only its own part of it
    env_ = environ(tmp_path, PROTOLIB_DATA_ROOTS=str(tmp_path))
    a, b = Workspace.new(env_), Workspace.new(env_)
    (a.datasets / "pets" / "train").mkdir(parents=True)
    (b.photos / "train").mkdir(parents=True)
    assert a.check_data_folder(a.datasets / "pets", environ=env_) == (a.datasets / "pets").resolve()
    assert a.check_data_folder(a.photos, environ=env_) == a.photos.resolve()
    for other, folder in [
        (b, a.datasets / "pets"),
        (b, a.uploads),
        (a, b.photos),
        (a, a.uploads_root),
        (a, tmp_path / "runs"),
        (a, b.private_runs),
        (a, tmp_path / "cache"),
    ]:
        with pytest.raises(DataFolderRefused, match="cannot be opened here"):
            other.check_data_folder(folder, environ=env_)
    with pytest.raises(DataFolderRefused):
        b.check_data_folder(f"{b.datasets}/../../{a.upload_id}/datasets/pets", environ=env_)
    assert (tmp_path / "elsewhere").mkdir() is None
    assert a.check_data_folder(tmp_path / "elsewhere", environ=env_) == (tmp_path / "elsewhere").resolve()


def test_session_ids_are_random_and_not_the_upload_folder(tmp_path):
    a, b = Workspace.new(environ(tmp_path)), Workspace.new(environ(tmp_path))
    assert len({a.session, b.session, a.upload_id, b.upload_id}) == 4
    assert all(len(x) == 32 and int(x, 16) >= 0 for x in (a.session, a.upload_id))
    assert a.session not in str(a.uploads) and a.session not in str(a.datasets)
    assert a.private_runs == tmp_path / "runs" / "sessions" / a.session
    assert config.uploads_dir({}) == Path.home() / ".local" / "share" / "protoscope" / "uploads"
    message = a.redact(f"{a.private_runs / 'run'} is damaged; see {a.private_runs.parent}")
    assert a.session not in message and message == "your runs/run is damaged; see private runs"


# -- quotas -------------------------------------------------------------------------------------------
def test_sharing_limits_from_the_environment():
    mb = 1024**2
    assert config.sharing_limits({}) == SharingLimits(500 * mb, 5000 * mb, 24 * HOUR)
    limits = config.sharing_limits(
        {"PROTOLIB_UPLOAD_QUOTA_MB": "2", "PROTOLIB_UPLOADS_TOTAL_MB": "3.5", "PROTOLIB_MAX_AGE_HOURS": "0.5"}
    )
    assert limits == SharingLimits(2 * mb, int(3.5 * mb), 1800.0)
    for bad in ({"PROTOLIB_UPLOAD_QUOTA_MB": "lots"}, {"PROTOLIB_MAX_AGE_HOURS": "-1"}):  # refused, naming it
        with pytest.raises(config.ConfigError, match=next(iter(bad))):
            config.sharing_limits(bad)


def test_upload_quotas_per_session_and_in_all(tmp_path):
    from pages.common.uploads import extract_zip_upload, save_uploads

    limits = SharingLimits(session_quota=10_000, total_quota=15_000, max_age=HOUR)
    a, b = Workspace.new(environ(tmp_path)), Workspace.new(environ(tmp_path))
    assert a.upload_room(limits) == 10_000
    (a.photos / "train" / "1").mkdir(parents=True)
    (a.photos / "train" / "1" / "x.png").write_bytes(b"x" * 6_000)
    assert a.upload_room(limits) == 4_000 and b.upload_room(limits) == 9_000  # b: the server has 9,000 left
    (b.datasets / "d").mkdir(parents=True)
    (b.datasets / "d" / "y.png").write_bytes(b"y" * 8_000)
    assert a.upload_room(limits) == 1_000 and b.upload_room(limits) == 1_000  # the total binds both
    assert a.check_upload(1_000, limits) == 1_000
    with pytest.raises(QuotaExceeded, match="only 1000 bytes of upload space is left"):
        a.check_upload(1_001, limits)
    # photos past the room are reported and not stored
    photo = png()
    saved, problems = save_uploads(a.photos, "train", "2", [("p.png", photo), ("q.png", photo)], room=len(photo) + 100)
    assert len(saved) == 1 and len(problems) == 1 and "quota" in problems[0].reason
    # a zip that unpacks past the room is refused whole
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(3):
            archive.writestr(f"n01440764/{i}.png", photo)
    with pytest.raises(UploadError, match="left of the upload quota"):
        extract_zip_upload(a.datasets, "z.zip", buffer.getvalue(), room=2 * len(photo))
    assert not (a.datasets / "z").exists()
    assert extract_zip_upload(a.datasets, "z.zip", buffer.getvalue(), room=10 * len(photo)).n_images == 3


# -- clean-up -----------------------------------------------------------------------------------------
def aged(folder: Path, hours: float, now: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "f.png").write_bytes(b"x")
    os.utime(folder, (now - hours * HOUR, now - hours * HOUR))
    return folder


def test_clean_up_removes_what_unused_sessions_left(tmp_path):
    now = time.time()
    runs, uploads = tmp_path / "runs", tmp_path / "uploads"
    old_upload, fresh_upload = aged(uploads / "old", 30, now), aged(uploads / "fresh", 2, now)
    old_runs, fresh_runs = aged(runs / "sessions" / "old", 25, now), aged(runs / "sessions" / "fresh", 1, now)
    kept_old = aged(uploads / "kept", 48, now)
    shared = aged(runs / "shared" / "published-run", 1000, now)  # published runs are never cleaned
    removed = clean_up(runs, uploads, 24 * HOUR, now, keep=(kept_old,))
    assert sorted(removed) == sorted([old_upload, old_runs])
    assert not old_upload.exists() and not old_runs.exists()
    assert fresh_upload.is_dir() and fresh_runs.is_dir() and kept_old.is_dir() and shared.is_dir()
    assert clean_up(tmp_path / "none", tmp_path / "none2", HOUR, now) == []  # missing folders: nothing to do


def test_clean_up_runs_when_a_session_starts_at_most_every_few_minutes(tmp_path, monkeypatch):
    monkeypatch.setattr(cleanup, "CLEAN_UP", cleanup._Throttle(every=600))
    env_ = environ(tmp_path, PROTOLIB_MAX_AGE_HOURS="24")
    now = time.time()
    first = aged(tmp_path / "uploads" / "stale-1", 25, now)
    workspace = Workspace.start(env_, now=now)
    assert not first.exists()
    second = aged(tmp_path / "uploads" / "stale-2", 25, now)
    Workspace.start(env_, now=now + 60)  # a minute later: not again
    assert second.exists()
    Workspace.start(env_, now=now + 601)
    assert not second.exists()
    # a session in use keeps its folders: each run of its pages marks them used
    aged(workspace.uploads, 30, now)
    workspace.touch()
    assert clean_up(tmp_path / "runs", tmp_path / "uploads", 24 * HOUR) == []


# -- who sees which run -------------------------------------------------------------------------------
def test_private_runs_published_runs_and_operator_runs(tmp_path):
    env_ = environ(tmp_path)
    a, b = Workspace.new(env_), Workspace.new(env_)
    fake_run(a.new_run_path("secret"))
    fake_run(tmp_path / "runs" / "shared" / "team")
    fake_run(tmp_path / "runs" / "operator")  # put in the runs folder itself, e.g. by the CLI
    assert list(a.visible_runs()) == ["secret", "team", "operator"]
    assert list(b.visible_runs()) == ["team", "operator"]
    assert a.owns(a.visible_runs()["secret"].path) and not b.owns(a.visible_runs()["secret"].path)
    assert not a.owns(a.visible_runs()["team"].path)
    # a private name never shadows a published one: new private runs avoid published names...
    assert a.new_run_path("team") == a.private_runs / "team-2"
    assert a.new_run_path("secret") == a.private_runs / "secret-2"
    # ...and a name published later is shown apart
    fake_run(tmp_path / "runs" / "shared" / "secret")
    assert list(a.visible_runs()) == ["secret", "secret · published", "team", "operator"]
    assert a.visible_runs()["secret · published"].path == tmp_path / "runs" / "shared" / "secret"


def test_publishing_moves_the_run_with_what_it_needs(tmp_path):
    env_ = environ(tmp_path)
    a, b = Workspace.new(env_), Workspace.new(env_)
    photo = a.datasets / "pets" / "train" / "dog" / "rex.png"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(png())
    sample = str(DATA / "train" / CLASSES[0] / "x.JPEG")
    probe = a.private_runs / "probe-pets"
    probe.mkdir(parents=True)
    (probe / PROBE_MANIFEST).write_text(json.dumps({"format": PROBE_FORMAT, "data": str(a.datasets / "pets")}))
    (probe / "head.safetensors").write_bytes(b"weights")
    private = fake_run(
        a.new_run_path("mine"),
        images={"c0": [str(photo)], "c1": [sample]},
        backbone=probe_name(probe),
        data=str(a.datasets / "pets"),
        parent=str(a.private_runs / "earlier"),
    )
    assert "mine" not in b.visible_runs()
    with pytest.raises(RunError, match="only a run of this session"):
        publish(b, private)
    published = publish(a, private)
    assert published == tmp_path / "runs" / "shared" / "mine" and not private.exists()
    assert "mine" in b.visible_runs() and b.visible_runs()["mine"].path == published
    run = load_run(published)  # still a usable run
    text = (published / MANIFEST).read_text()
    assert a.session not in text and a.upload_id not in text  # nothing of the session's folders is left
    copied = Path(run.manifest["images"]["c0"][0])
    assert copied == published / "images" / "c0" / "rex.png" and copied.read_bytes() == photo.read_bytes()
    assert run.manifest["images"]["c1"] == [sample] and run.manifest["parent"] == "earlier"
    shared_probe = tmp_path / "runs" / "shared" / "probe-pets"
    assert run.manifest["backbone"] == probe_name(shared_probe) and (shared_probe / "head.safetensors").is_file()
    assert json.loads((shared_probe / PROBE_MANIFEST).read_text())["data"] == "pets"
    assert probe.is_dir()  # the session keeps its own probe
    assert b.may_use_probe(run.manifest["backbone"]) and not b.may_use_probe(probe_name(probe))
    # a second run of the same name gets a new one
    again = publish(a, fake_run(a.private_runs / "mine"))
    assert again.name == "mine-2"


DAMAGED = {
    "a-list": [1, 2, 3],
    "missing-keys": {"format": "protoscope.run/1", "backbone": "efficientnet_lite0"},
    "unknown-strategy": "strategy",
    "bad-classes": "classes",
    "not-json": "{oops",
}


def damage(folder: Path, how: str) -> Path:
    """A run folder damaged as ``how`` says."""
    path = fake_run(folder / how)
    manifest = json.loads((path / MANIFEST).read_text())
    value = DAMAGED[how]
    if how == "unknown-strategy":
        manifest["params"]["strategy"] = "magic"
    elif how == "bad-classes":
        manifest["classes"] = ["tench", "dog"]
    elif isinstance(value, str):
        (path / MANIFEST).write_text(value)
        return path
    else:
        manifest = value
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("how", list(DAMAGED))
def test_damaged_runs_are_listed_as_damaged(tmp_path, how):
    path = damage(tmp_path, how)
    fake_run(tmp_path / "good")
    listed = {r.name: r for r in checked_runs(tmp_path)}
    assert listed["good"].manifest is not None
    assert listed[how].manifest is None and listed[how].problem
    with pytest.raises(RunError):
        load_run(path)


def test_manifest_problems():
    good = {
        "backbone": "b",
        "fingerprint": "f",
        "k": 2,
        "strategy": "optimized",
        "images": {},
        "classes": [{"name": "a", "folder": "a"}],
    }
    assert manifest_problem(good) is None
    assert "JSON list" in manifest_problem([good])
    assert "k=True is not sensible" in manifest_problem(good | {"k": True})
    assert "unknown strategy" in manifest_problem(good | {"strategy": "magic"})
    assert "class entry" in manifest_problem(good | {"classes": [{"name": "a"}]})
    assert "k=0 is not sensible" in manifest_problem(good | {"k": 0})


# -- one heavy job at a time --------------------------------------------------------------------------
def test_the_queue_runs_one_job_at_a_time_first_come_first_served():
    queue = JobQueue(1)
    release, order, places = threading.Event(), [], {}

    def job(name: str, hold: threading.Event | None = None) -> None:
        with queue.turn(lambda place: places.setdefault(name, []).append(place), poll=0.02):
            order.append(name)
            if hold is not None:
                hold.wait(10)

    first = threading.Thread(target=job, args=("first", release))
    first.start()
    wait_until(lambda: order, "the first job to start")
    second = threading.Thread(target=job, args=("second",))
    second.start()
    wait_until(lambda: len(queue) >= 2, "the second job to join the line")
    third = threading.Thread(target=job, args=("third",))
    third.start()
    wait_until(lambda: places.get("second") and places.get("third"), "the waiting jobs to be told their places")
    assert places["second"][0] == 2 and places["third"][0] == 3  # "2nd in line", "3rd in line"
    assert order == ["first"] and len(queue) == 3
    release.set()
    for thread in (first, second, third):
        thread.join(10)
    assert order == ["first", "second", "third"] and len(queue) == 0


def test_leaving_the_line_gives_the_place_up():
    queue = JobQueue(1)
    hold, started = threading.Event(), threading.Event()

    def holder():
        with queue.turn():
            started.set()
            hold.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    started.wait(10)

    class PageLeft(Exception):
        pass

    def leave(place):
        raise PageLeft

    with pytest.raises(PageLeft):
        with queue.turn(leave):
            pass
    assert len(queue) == 1  # only the running job
    hold.set()
    thread.join(10)
    with queue.turn():  # free again
        assert len(queue) == 1


def test_ordinals():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 102, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "102nd",
        "111th",
    ]


# -- the app (AppTest) --------------------------------------------------------------------------------
def page_text(at) -> str:
    """Everything the session's page holds, as Streamlit sends it to the browser (element ids included)."""
    found = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            found.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(found)


PAGES = ["pages/decompose.py", "pages/prototypes.py", "pages/explain.py", "pages/intervene.py", "pages/evaluate.py"]


def decompose_small(at, name: str):
    classes = next(m for m in at.multiselect if m.key.startswith("w.dec_classes|"))
    classes.set_value(CLASSES).run()
    at.slider(key="w.dec_k").set_value(2).run()
    at.number_input(key="w.dec_per_class").set_value(3).run()
    at.text_input(key="w.dec_name").set_value(name).run()
    button(at, "Run decomposition").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at, "error")


@pytest.mark.usefixtures("app_env")
def test_sessions_see_their_own_runs_and_the_published_ones():
    a, b = start("pages/decompose.py"), start("pages/decompose.py")
    decompose_small(a, "secret-of-a")
    assert a.session_state["run"] == "secret-of-a"
    session, link = a.session_state["workspace"].session, a.session_state["workspace_link"]
    assert "Private: only your workspace sees it" in texts(a.sidebar, "caption")
    for page in PAGES:  # A's own pages never show its session id or its private link (widget keys included)
        a.switch_page(page).run()
        assert not a.exception, [e.value for e in a.exception]
        assert "secret-of-a" in page_text(a) and "w.run" in page_text(a)  # what is searched holds names and keys
        assert session not in page_text(a) and link not in page_text(a), page
    b.run()
    assert "secret-of-a" not in b.sidebar.selectbox(key="w.run").options
    for page in PAGES:
        b.switch_page(page).run()
        assert "secret-of-a" not in page_text(b) and session not in page_text(b), page
    # published: B sees it, read-only, and A keeps it selected
    a.switch_page("pages/decompose.py").run()
    button(a.sidebar, "Publish this run").click().run()
    assert not a.exception and not a.error, texts(a, "error")
    assert a.session_state["run"] == "secret-of-a"
    assert "Published: everyone using this server sees it." in texts(a.sidebar, "caption")
    assert (a.session_state["workspace"].shared_runs / "secret-of-a" / MANIFEST).is_file()
    b.switch_page("pages/decompose.py").run()
    assert "secret-of-a" in b.sidebar.selectbox(key="w.run").options
    table = b.dataframe[-1].value
    assert table.set_index("run").loc["secret-of-a", "visible to"] == "everyone"


@pytest.mark.usefixtures("app_env")
def test_the_data_folder_box_refuses_other_sessions_uploads():
    a, b = start("pages/decompose.py"), start("pages/decompose.py")
    folder = a.session_state["workspace"].datasets / "pets"
    (folder / "train" / CLASSES[0]).mkdir(parents=True)
    a.sidebar.text_input(key="w.data_dir").set_value(str(folder)).run()
    assert "cannot be opened here" not in texts(a, "error")
    for typed in [str(folder), f"{b.session_state['workspace'].datasets}/../../{folder.relative_to(folder.parents[2])}", "/etc"]:
        b.sidebar.text_input(key="w.data_dir").set_value(typed).run()
        assert not b.exception
        assert "cannot be opened here" in texts(b.sidebar, "error")
        assert "cannot be opened here" in texts(b, "error")  # on the page too
        assert button(b, "Run decomposition").disabled


@pytest.mark.usefixtures("app_env")
@pytest.mark.parametrize("how", ["a-list", "missing-keys", "unknown-strategy", "bad-classes"])
def test_a_damaged_published_run_breaks_no_page(how, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    monkeypatch.setenv("PROTOLIB_RUNS", str(runs))
    damage(runs / "shared", how)
    fake_run(runs / "shared" / "fine")
    for page in PAGES:
        at = start(page, run=how)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert "Damaged run" in texts(at.sidebar, "caption")
        if page != "pages/decompose.py":
            assert f"Run “{how}” cannot be used" in texts(at, "error")
    at = start("pages/decompose.py", run=how)
    rows = at.dataframe[-1].value.set_index("run")
    assert rows.loc[how, "backbone"] == "(damaged)" and rows.loc["fine", "classes"] == 2


@pytest.mark.usefixtures("app_env")
def test_one_click_builds_the_demo_once_and_opens_its_gallery(tmp_path, monkeypatch):
    monkeypatch.setenv("PROTOLIB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(demo_run, "DEMO", demo_run.Demo(images_per_class=3, n_classes=2, classes=tuple(CLASSES)))
    at = start("pages/prototypes.py", run=None)
    assert "no decomposition yet" in texts(at, "info")
    button(at, "Build the demo").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Prototypes" and not at.error, texts(at, "error")
    assert at.session_state["run"] == demo_run.DEMO.name
    assert "Part maps across the 3 training images of “tench”" in at.subheader[0].value
    demo = tmp_path / "runs" / "shared" / demo_run.DEMO.name
    stamp = (demo / MANIFEST).stat().st_mtime
    other = start("pages/decompose.py", run=None)  # another session sees the demo: no second one is built
    assert not [b for b in other.button if b.label == "Build the demo"]
    assert other.session_state["run"] == demo_run.DEMO.name
    assert demo_run.build_demo(None, tmp_path / "runs", demo=demo_run.DEMO) == demo  # built already: nothing runs
    assert (demo / MANIFEST).stat().st_mtime == stamp and len(list((tmp_path / "runs" / "shared").iterdir())) == 1


@contextmanager
def another_job_running(monkeypatch):
    """Another session holds the server's one job slot until this one has said its place in line; yields the
    (what, place) pairs the page said, and checks the queue is empty afterwards."""
    from pages.common import jobs

    queue = JobQueue(1)
    monkeypatch.setattr(job_queue, "JOBS", queue)
    said = []
    monkeypatch.setattr(jobs, "queue_message", lambda what, place: said.append((what, place)) or f"{ordinal(place)} in line")
    hold, holding = threading.Event(), threading.Event()

    def other_session():
        with queue.turn():
            holding.set()
            hold.wait(60)

    def release_when_waited():
        deadline = time.monotonic() + 60
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        hold.set()

    holder = threading.Thread(target=other_session)
    holder.start()
    holding.wait(10)
    releaser = threading.Thread(target=release_when_waited)
    releaser.start()
    yield said
    holder.join(10)
    releaser.join(10)
    assert len(queue) == 0


@pytest.mark.usefixtures("app_env")
def test_a_decomposition_waits_its_turn_and_says_its_place(monkeypatch):
    from pages.common import jobs

    assert "your decomposition is **2nd in line**" in jobs.queue_message("decomposition", 2)
    with another_job_running(monkeypatch) as said:
        at = start("pages/decompose.py")
        decompose_small(at, "waited")
    assert said and said[0] == ("decomposition", 2)  # "2nd in line" while the other job ran
    assert at.session_state["run"] == "waited"


@pytest.mark.slow
@pytest.mark.usefixtures("app_env")
def test_held_out_features_and_the_report_wait_their_turn(monkeypatch):
    """The other heavy jobs of a page queue too: held-out features (Evaluate, Intervene) and the report."""
    at = start("pages/evaluate.py")
    at.number_input(key="w.val_per_class").set_value(2).run()
    at.toggle(key="w.val_only_run").set_value(True).run()
    with another_job_running(monkeypatch) as said:
        button(at, "Evaluate on the held-out split").click().run()
    assert said and said[0] == ("held-out feature extraction", 2)
    assert not at.exception and not at.error, texts(at, "error")
    assert "Top-1, prototype network" in [m.label for m in at.metric]
    at.number_input(key="report_faith_images").set_value(1).run()
    with another_job_running(monkeypatch) as said:
        button(at, "Build the report").click().run()
    assert said and said[0] == ("report", 2)
    assert not at.exception and not at.error, texts(at, "error")
