"""Bad input on a shared server, in a real Chromium (rows 1 and 4 of the second bad-input table).

A run is published whose model is a linear probe fit on a folder whose ``classes.csv`` names the classes with
HTML and markdown that would fetch an image and draw links to a small local HTTP server, and whose prototype
carries such a label too. Every page of the run must draw those names as text: no element and no request
comes from them (the server counts its hits, Chromium's requests are watched). Then a 20000x1 PNG uploaded
on Explain gets a clear message while the app server's memory stays within 200 MB of its level before.
"""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from protolib.config import SAMPLE_DATA
from tests.browser import CHROMIUM, app_server, free_port, go, new_page, run_options, settle

DATA = SAMPLE_DATA
FOLDERS = {"n01440764": "a", "n02102040": "b"}
RUN = "names-run"
MB = 1024**2

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"the sample photos are not at {DATA}"),
]


def names(port: int) -> dict[str, str]:
    """Class names (and a prototype label) that are HTML and markdown pointing at the counting server."""
    url = f"http://127.0.0.1:{port}"
    return {
        "a": f'fish <img src={url}/img-a> <a href="{url}/link-a">Download the repaired model</a>',
        "b": f"dog ![x]({url}/md-b) [click]({url}/link-b) :red[red]",
        "label": f"<img src={url}/img-label>",
    }


@pytest.fixture(scope="module")
def hits():
    """A tiny HTTP server on 127.0.0.1 that records every request it gets."""
    seen: list[str] = []

    class Count(BaseHTTPRequestHandler):
        def do_GET(self):  # http.server calls it by this name
            seen.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Count)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"port": server.server_address[1], "seen": seen}
    server.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory, hits):
    """The app with one published run of a probe whose classes are named with HTML."""
    from protolib.backbones import load_backbone
    from protolib.pipeline import run_decomposition
    from protolib.probe import fit_probe
    from protolib.runs import save_run

    tmp = tmp_path_factory.mktemp("hardening")
    runs, cache, data = tmp / "runs", tmp / "cache", tmp / "data" / "named"
    text = names(hits["port"])
    for wnid, folder in FOLDERS.items():
        (data / folder).mkdir(parents=True)
        for photo in sorted((DATA / "train" / wnid).iterdir())[:10]:
            shutil.copy(photo, data / folder / photo.name)
    rows = "".join(f'{folder},{i},"{text[folder].replace(chr(34), chr(34) * 2)}"\n' for i, folder in enumerate(FOLDERS.values()))
    (data / "classes.csv").write_text("wnid,imagenet_index,name\n" + rows)
    probe = fit_probe(data, "efficientnet_lite0", images_per_class=8, cache_dir=cache)
    probe_path = probe.save(runs / "shared" / "probe-named", cache_dir=cache)
    model = load_backbone(f"probe:{probe_path}")
    assert model.class_names == [text["a"], text["b"]]
    run = run_decomposition(model, data, k=2, images_per_class=4, cache_dir=cache)
    save_run(run.with_prototype_names({0: {0: text["label"]}}), runs / "shared" / RUN)
    with app_server(
        tmp,
        PROTOLIB_RUNS=str(runs),
        PROTOLIB_CACHE=str(cache),
        PROTOLIB_UPLOADS=str(tmp / "uploads"),
        PROTOLIB_DATA_ROOTS=str(data.parent),
    ) as url:
        yield {"url": url, "log": tmp / "server.log", "tmp": tmp}


#: where an element sits: the Streamlit test ids of its ancestors, and the text around it
WHERE = (
    "e => { const ids = []; for (let p = e; p; p = p.parentElement) if (p.dataset?.testid) ids.push(p.dataset.testid);"
    " return ids.slice(0, 3).join(' < ') + ': ' + e.parentElement.innerText.slice(0, 120); }"
)


def rss(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS now, VmHWM its peak) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def server_pid(url: str) -> int:
    """The process of the streamlit server listening on ``url``'s port."""
    port = url.rsplit(":", 1)[1]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streamlit" in b" ".join(argv) and port.encode() in argv:
            return int(cmdline.parent.name)
    raise AssertionError(f"no streamlit process on port {port}")


def test_names_from_data_are_drawn_as_text_on_every_page(browser, server, hits):
    context, page = new_page(browser, server)
    port = str(hits["port"])
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url) if f":{port}/" in request.url else None)
    try:
        settle(page)
        assert run_options(page) == [RUN]  # the published run, selected
        shown_as_text = 0
        for title in ("Prototypes", "Explain", "Intervene", "Evaluate"):
            go(page, title)
            page.wait_for_timeout(1500)  # let images and links a page would load do so
            settle(page)
            main = page.get_by_test_id("stMain")
            found = page.locator(f'img[src*=":{port}"], a[href*=":{port}"]')
            assert found.count() == 0, (title, [found.nth(i).evaluate(WHERE) for i in range(found.count())])
            assert page.get_by_test_id("stException").count() == 0, title
            text = main.inner_text()
            shown_as_text += f"<img src=http://127.0.0.1:{port}" in text or f"![x](http://127.0.0.1:{port}" in text
        assert shown_as_text >= 2  # the names were drawn, as the characters they are
        assert requests == [] and hits["seen"] == []
    except Exception:
        page.screenshot(path=str(server["tmp"] / "failure-names.png"), full_page=True)
        print(server["log"].read_text()[-4000:])
        raise
    finally:
        context.close()


def test_a_20000x1_upload_on_explain_is_refused_without_taking_memory(browser, server, tmp_path):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (20000, 1), (200, 30, 30)).save(thin)
    assert thin.stat().st_size < 1000
    pid = server_pid(server["url"])
    context, page = new_page(browser, server)
    try:
        go(page, "Explain")
        page.get_by_test_id("stButtonGroup").get_by_role("radio", name="Upload").click()
        settle(page)
        before, peak_before = rss(pid, "VmRSS"), rss(pid, "VmHWM")
        page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(thin))
        message = page.get_by_test_id("stAlert").filter(has_text="too thin")
        message.wait_for()
        settle(page)
        assert "thin.png" in message.inner_text() and "20000x1" in message.inner_text()
        after, peak_after = rss(pid, "VmRSS"), rss(pid, "VmHWM")
        print(f"server RSS {before / MB:.0f} -> {after / MB:.0f} MB, peak {peak_before / MB:.0f} -> {peak_after / MB:.0f} MB")
        assert after - before < 200 * MB and peak_after - max(peak_before, before) < 200 * MB, (before, after, peak_after)
        assert page.get_by_test_id("stException").count() == 0
    except Exception:
        page.screenshot(path=str(server["tmp"] / "failure-thin.png"), full_page=True)
        print(server["log"].read_text()[-4000:])
        raise
    finally:
        context.close()
