"""Pretrained weights fetched with consent in a real Chromium: a local HTTP server stands in for the model host
(``$PROTOLIB_WEIGHTS_MIRROR``). The sidebar says resnet18 needs weights and offers "Download weights (size)";
a corrupt file is refused with the checksum's message and leaves nothing in the torch hub cache; the real state
dict is fetched, checked and saved, and the app then decomposes with it, exactly.

As in tests/test_weights_download.py, the test's file is not torchvision's, so the app server's registry entry
for resnet18 names the test file (its own sha256 prefix), through a ``sitecustomize`` on the server's path; the
check that runs is the production one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.browser import CHROMIUM, ROOT, RUN_WAIT, WAIT, app_server, choose_classes, open_page, settle
from tests.weights_host import CLASSES, resnet18_file, serve

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

SITE = """# written by tests/test_browser_weights.py: the test's resnet18 file stands in for torchvision's
from protolib.backbones import torchvision_models as _tv

_real = _tv.weights_url
_tv.weights_url = lambda name: "https://download.pytorch.org/models/{name}" if name == "resnet18" else _real(name)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("browser-weights")
    data, name, model = resnet18_file(data_dir)
    (tmp / "mirror").mkdir()
    (tmp / "site").mkdir()
    (tmp / "site" / "sitecustomize.py").write_text(SITE.format(name=name))
    http, base = serve(tmp / "mirror")
    folders = {key: tmp / key for key in ("runs", "cache", "uploads", "torch")}
    env = {f"PROTOLIB_{key.upper()}": str(folders[key]) for key in ("runs", "cache", "uploads")}
    env |= {
        "TORCH_HOME": str(folders["torch"]),
        "PROTOLIB_WEIGHTS_MIRROR": base,
        "PYTHONPATH": os.pathsep.join([str(tmp / "site"), str(ROOT)]),
    }
    try:
        with app_server(tmp, **env) as url:
            yield {"url": url, "log": tmp / "server.log", "tmp": tmp, "data": data, "name": name, "model": model, **folders}
    finally:
        http.shutdown()


def test_download_button_refuses_a_corrupt_file_then_fetches_and_decomposes(browser, server, monkeypatch):
    served = server["tmp"] / "mirror" / server["name"]
    checkpoints = server["torch"] / "hub" / "checkpoints"
    corrupt = bytearray(server["data"])
    corrupt[1000] ^= 0xFF
    served.write_bytes(bytes(corrupt))
    with open_page(browser, server) as page:
        settle(page)
        sidebar = page.get_by_test_id("stSidebar")
        sidebar.get_by_test_id("stSelectbox").filter(has_text="Backbone").click()
        page.get_by_role("option", name="ResNet-18, ImageNet (torchvision) · needs weights").click()
        settle(page)
        assert "No weights for resnet18 on this machine" in sidebar.inner_text()
        assert server["name"] in sidebar.inner_text()  # the file it would fetch
        button = sidebar.get_by_role("button", name="Download weights (44.7 MB)")

        button.click()
        settle(page)
        refusal = sidebar.get_by_test_id("stAlert").filter(has_text="sha256")
        refusal.wait_for(timeout=WAIT)
        assert "nothing was kept" in refusal.inner_text()
        assert not checkpoints.exists() or list(checkpoints.iterdir()) == []

        served.write_bytes(server["data"])
        button.click()
        sidebar.get_by_test_id("stAlert").filter(has_text=f"Checked and saved: {server['name']}").wait_for(timeout=WAIT)
        settle(page)
        assert [p.name for p in checkpoints.iterdir()] == [server["name"]]
        assert (checkpoints / server["name"]).read_bytes() == server["data"]
        assert "No weights for resnet18" not in sidebar.inner_text()

        choose_classes(page, ["tench", "French horn"])
        per_class = page.get_by_role("spinbutton", name="Images per class", exact=True)
        per_class.fill("4")
        per_class.press("Enter")
        settle(page)
        page.get_by_role("button", name="Run decomposition").click()
        page.get_by_test_id("stAlert").filter(has_text="saved").filter(has_text="resnet18").wait_for(timeout=RUN_WAIT)
        assert page.get_by_test_id("stException").count() == 0

    from protolib.backbones import load_backbone, torchvision_models
    from protolib.data import load_image
    from protolib.runs import load_run

    runs = [p for p in server["runs"].rglob("manifest.json") if p.parent.name.startswith("resnet18")]
    assert len(runs) == 1
    run = load_run(runs[0].parent)
    # the test's own process reads the file the app saved, under the same registry entry
    monkeypatch.setenv("TORCH_HOME", str(server["torch"]))
    monkeypatch.setattr(torchvision_models, "weights_url", lambda arch: f"https://download.pytorch.org/models/{server['name']}")
    backbone = load_backbone("resnet18")
    assert backbone.fingerprint == server["model"].fingerprint == run.manifest["fingerprint"]
    assert sorted(Path(f).name for f in run.manifest["images"]) == sorted(CLASSES)
    paths = [Path(p) for folder in run.manifest["images"].values() for p in folder]
    x = torch.stack([backbone.preprocessing.transform()(load_image(p)) for p in paths])
    logits, _ = run.head(backbone)(backbone(x)[0])
    with torch.inference_mode():
        reference = backbone.model(x)
    assert float((logits - reference).abs().max()) <= 1e-4 * max(1.0, float(reference.abs().max()))
