"""The edit in space in a real Chromium (`streamlit run app.py`, driven with Playwright), on a tiny published run
(EfficientNet-Lite0, 2 classes x 4 photos of the sample, k = 3).

Once for a run of the paper's NMF and once for one of ``unit-evidence`` (its part maps read with damped loudness).
On Intervene, "Leave out where this part is" for a prototype of tench: the photo is redrawn with the left-out
cells, the page's logit is the edited model's logit computed independently (the backbone on the photo, the part's
presence on its grid, the mean of the other cells, the model's own head); the edit saves as a new run (its
manifest names the part) and downloads as a TorchScript model that reproduces the edited logits.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from protolib.config import SAMPLE_DATA
from tests.browser import CHROMIUM, WAIT, app_server, go, open_page, settle

CLASSES = ["n01440764", "n02102040"]  # tench, English springer
RUN = "tiny"

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.skipif(not (SAMPLE_DATA / "train").is_dir(), reason=f"the sample photos are not at {SAMPLE_DATA}"),
]


def expected_edit(run, backbone, photo: torch.Tensor, level: float):
    """For each prototype of tench: (cells left out of the photo's grid, the edited model's logits), written out
    with the backbone's grid and head only."""
    with torch.no_grad():
        grid = backbone.spatial_features(photo.unsqueeze(0))[0].permute(1, 2, 0)  # (H, W, D)
    found = {}
    cells = grid.clamp_min(0)
    cells = cells / cells.norm(dim=-1, keepdim=True).clamp_min(1e-12) ** run.presence_damping  # as the run reads a cell
    for i in range(run.k):
        part = run.nmf_prototypes[0, i] / run.presence_scale[0, i]
        out = (cells @ part) >= level
        kept = grid[~out]
        pooled = kept.mean(dim=0) if len(kept) else grid.flatten(0, 1).mean(dim=0)
        found[i] = (int(out.sum()), pooled @ backbone.head_weight.T + backbone.head_bias)
    return found


@pytest.fixture(scope="module", params=["nmf", "unit-evidence"])
def server(request, tmp_path_factory):
    """The app with the tiny run published; the photo the page opens on (val, tench, first photo), the prototype
    whose part covers some but not all of its cells, and what the edited model gives for it."""
    from protolib.backbones import load_backbone
    from protolib.data import load_image, split_images
    from protolib.method.spatial import LEVEL
    from protolib.pipeline import run_decomposition
    from protolib.runs import save_run

    tmp = tmp_path_factory.mktemp("browser-space")
    runs, cache = tmp / "runs", tmp / "cache"
    backbone = load_backbone()
    run = run_decomposition(
        backbone, SAMPLE_DATA, classes=CLASSES, images_per_class=4, k=3, cache_dir=cache, discovery=request.param
    )
    save_run(run, runs / "shared" / RUN)
    path = split_images(SAMPLE_DATA, "val", CLASSES[0])[0]
    photo = backbone.preprocessing.transform()(load_image(path))
    found = expected_edit(run, backbone, photo, LEVEL)
    cells = backbone.spatial_features(photo.unsqueeze(0)).shape[-1] ** 2
    i = next(i for i, (n, _) in found.items() if 0 < n < cells)
    with app_server(tmp, PROTOLIB_RUNS=str(runs), PROTOLIB_CACHE=str(cache), PROTOLIB_UPLOADS=str(tmp / "uploads")) as url:
        yield {
            "url": url,
            "log": tmp / "server.log",
            "tmp": tmp,
            "runs": runs,
            "prototype": i,
            "cells": cells,
            "left_out": found[i][0],
            "logits": found[i][1],
            "photo": photo,
            "tench": int(run.classes[0]),
        }


def photo_image(page) -> str:
    """The source of the photo drawn under "This photo" (the first image of the main area)."""
    return page.get_by_test_id("stMain").get_by_test_id("stImage").first.locator("img").get_attribute("src")


def test_leave_out_where_a_part_is_redraws_the_photo_changes_the_logit_saves_and_exports(browser, server, tmp_path):
    i, tench = server["prototype"], server["tench"]
    expected = server["logits"]
    with open_page(browser, server) as page:
        settle(page)
        go(page, "Intervene")
        page.get_by_text("Every prototype of the run").wait_for()
        before_image = photo_image(page)
        assert page.get_by_text("cells left out (hatched)").count() == 0

        page.locator(f'label:has(input[aria-label="Leave out where this part is (P{i + 1})"])').first.click()
        caption = page.get_by_text("cells left out (hatched)")
        caption.wait_for()
        settle(page)
        text = caption.inner_text()
        n, total, logit = re.search(r"Pooling: (\d+) of (\d+) cells left out.*logit (-?[\d.]+)", text).groups()
        assert (int(n), int(total)) == (server["left_out"], server["cells"])
        assert abs(float(logit) - float(expected[tench])) < 1e-4, (text, float(expected[tench]))
        assert photo_image(page) != before_image  # the photo is drawn again, with the left-out cells
        assert "Logit of “tench”" in page.get_by_test_id("stMain").inner_text()

        # -- saved as a new run: the manifest names the part; downloaded, the model applies the mask ----------
        page.get_by_text("Edit in space (the model's pooling, not its head)").wait_for()
        name = page.get_by_role("textbox", name="New run name")
        name.fill("tiny-space")
        name.press("Enter")
        settle(page)
        page.get_by_role("button", name="Save as a new run").click()
        page.get_by_test_id("stAlert").filter(has_text="Saved as run “tiny-space”").wait_for()
        settle(page)
        manifests = list(server["runs"].glob("**/tiny-space/manifest.json"))
        assert len(manifests) == 1
        assert json.loads(manifests[0].read_text())["spatial_edit"] == {"leave_out": [[tench, i]], "level": 0.3}
        with page.expect_download(timeout=WAIT) as download:
            page.get_by_test_id("stDownloadButton").filter(has_text="Download the model (TorchScript)").click()
        saved = tmp_path / "model.pt"
        download.value.save_as(saved)
        files = {"protoscope.json": ""}
        model = torch.jit.load(str(saved), _extra_files=files)
        assert json.loads(files["protoscope.json"])["spatial_edit"]["leave_out"] == [[tench, i]]
        with torch.no_grad():
            assert (model(server["photo"].unsqueeze(0))[0] - expected).abs().max() < 1e-4
        assert page.get_by_test_id("stException").count() == 0
