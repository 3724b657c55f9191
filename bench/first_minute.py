"""Seconds from `streamlit run app.py` to the first prototype gallery, for a newcomer who clicks
"Build the demo" and nothing else. Cold: empty runs folder and feature cache; warm: empty runs folder,
feature cache filled by the cold pass.

    .venv/bin/python bench/first_minute.py [repeats]
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_pass(browser, runs: Path, cache: Path, uploads: Path) -> dict:
    port = free_port()
    env = dict(os.environ, PROTOLIB_RUNS=str(runs), PROTOLIB_CACHE=str(cache), PROTOLIB_UPLOADS=str(uploads))
    for name in ("PROTOLIB_DATA", "PROTOLIB_DATA_ROOTS"):
        env.pop(name, None)
    page = browser.new_context(viewport={"width": 1440, "height": 1000}).new_page()
    page.set_default_timeout(300_000)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/streamlit"), "run", "app.py", "--server.port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://localhost:{port}"
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.1)
        serving = time.perf_counter() - started
        page.goto(url)
        button = page.get_by_role("button", name="Build the demo")
        button.wait_for()
        opened = time.perf_counter() - started
        button.click()
        page.get_by_text("Part maps across the 20 training images of").wait_for()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=stImage] img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length >= 20"
        )
        gallery = time.perf_counter() - started
        return {
            "server answers": round(serving, 1),
            "app open with the button": round(opened, 1),
            "first gallery": round(gallery, 1),
            "click to gallery": round(gallery - opened, 1),
        }
    finally:
        page.context.close()
        proc.terminate()
        proc.wait(15)


def main():
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(repeats):
            tmp = Path(tempfile.mkdtemp(prefix="first-minute-"))
            cache = tmp / "cache"
            print("cold", one_pass(browser, tmp / "runs-cold", cache, tmp / "uploads"), flush=True)
            print("warm", one_pass(browser, tmp / "runs-warm", cache, tmp / "uploads"), flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        browser.close()


if __name__ == "__main__":
    main()
