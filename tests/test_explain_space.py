"""Explain under a run's edit in space (``SpatialEdit``): the explanation is of the edited model, in the library,
on the command line (the run's edit by default, ``--without-edit`` to leave it off) and on the Explain page.

The expected numbers come from ``edited_pooling`` (checked against a cell-by-cell computation in
test_spatial.py) and the head. The run is the ``app_env`` fixture's (EfficientNet-Lite0, tench and English
springer, 8 photos each, k = 3); the photo is the one the Explain page opens on (the first held-out tench).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from protolib.data.folders import image_files
from tests.apptest import CLASSES, DATA, start, texts

pytestmark = pytest.mark.usefixtures("navigation_mode", "one_thread")

SPACED = "spaced"  # the published copy of the fixture's run with an edit in space


def logits_of(head, feats: torch.Tensor, edit) -> torch.Tensor:
    """The model's logits (C_all,) for one photo's features (H, W, D) under ``edit`` (None: no edit)."""
    from protolib.method.spatial import edited_pooling

    pooled = edited_pooling(head, feats.unsqueeze(0), edit).pooled
    return head.logits(pooled, head.contributions(pooled))[0]


@pytest.fixture(scope="module")
def spaced(app_env):
    """The fixture's run saved again (published) with an edit in space that leaves out some but not all cells of
    the photo and moves its tench logit; the photo's features and both models' logits."""
    from protolib.backbones import load_backbone
    from protolib.explain import model_input
    from protolib.method.spatial import SpatialEdit, edited_pooling
    from protolib.runs import load_run, save_run

    backbone = load_backbone()
    run = load_run(app_env["runs"] / "shared" / app_env["run"], backbone)
    head = run.head(backbone)
    photo = image_files(DATA / "val" / CLASSES[0])[0]
    x, _ = model_input(backbone, photo)
    with torch.no_grad():
        feats = backbone(x)[0][0]
    plain = logits_of(head, feats, None)
    tench = int(run.classes[0])
    for label in run.classes.tolist():
        for i in range(run.k):
            edit = SpatialEdit(((label, i),))
            share = float(edited_pooling(head, feats.unsqueeze(0), edit).left_out_share[0])
            edited = logits_of(head, feats, edit)
            if 0 < share < 1 and abs(float(edited[tench] - plain[tench])) > 1e-2:
                path = save_run(run.with_spatial_edit(edit, "test"), app_env["runs"] / "shared" / SPACED)
                return {"path": path, "head": head, "edit": edit, "photo": photo, "feats": feats}
    raise AssertionError("no part of the run leaves out part of the photo")


def test_the_explanation_is_of_the_edited_model(spaced, lite0):
    from protolib.explain import explain_image
    from protolib.method.spatial import SpatialEdit, edited_pooling

    head, edit, feats = spaced["head"], spaced["edit"], spaced["feats"]
    expected, plain = logits_of(head, feats, edit), logits_of(head, feats, None)
    for label in head.classes.tolist():  # the predicted class and the other one
        e = explain_image(lite0, head, spaced["photo"], label, edit)
        assert (e.logits - expected).abs().max() < 1e-4
        assert abs(e.logit - float(expected[label])) < 1e-4 and abs(e.logit - float(plain[label])) > 1e-2
        assert abs(float(e.contributions.sum()) + e.bias - float(e.logits[label])) < 1e-5  # contributions + bias = logit
        # the cells drawn as left out are the ones the edited pooling leaves out
        share = float(edited_pooling(head, feats.unsqueeze(0), edit).left_out_share[0])
        assert e.left_out is not None and e.left_out.shape == feats.shape[:2] and not e.kept_all
        assert abs(float(e.left_out.float().mean()) - share) < 1e-6 and 0 < share < 1
        assert f"the {int(e.left_out.sum())} of {e.left_out.numel()} cells left out" in e.space_note(lite0.class_names)
        # heatmaps still describe every cell; their mean over the kept cells is the contribution
        grid = torch.einsum("hwd,kd->khw", feats, head.refined_prototypes[head.position(label)])
        assert (grid[:, ~e.left_out].mean(dim=1) - e.contributions).abs().max() < 1e-4
    unedited = explain_image(lite0, head, spaced["photo"], None, None)
    assert (unedited.logits - plain).abs().max() < 1e-4 and unedited.left_out is None and unedited.space_note([]) == ""
    # an edit that would leave out every cell leaves out none: the photo keeps the original pooling
    label = int(head.classes[0])
    everything = explain_image(lite0, head, spaced["photo"], label, SpatialEdit(((label, 0), (label, 1), (label, 2)), 1e-9))
    assert everything.kept_all and not bool(everything.left_out.any()) and (everything.logits - plain).abs().max() < 1e-4
    assert "the 0 of 49 cells left out (every cell would go" in everything.space_note(lite0.class_names)


def test_left_out_cells_are_drawn_and_nothing_else():
    from protolib.explain import left_out_overlay

    image = np.full((224, 224, 3), 200, np.uint8)
    mask = torch.zeros(7, 7, dtype=torch.bool)
    mask[2, 3] = True
    drawn = left_out_overlay(image, mask)
    changed = (drawn != image).any(axis=-1)
    assert changed[64:96, 96:128].all() and changed.sum() == 32 * 32  # exactly cell (2, 3): 224 / 7 = 32 pixels


def hatch_pixels(path) -> int:
    """Pixels of a figure in the colour the left-out cells are hatched with."""
    from protolib.explain import LEFT_OUT

    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(LEFT_OUT)).max(axis=-1) <= 8).sum())


def test_the_command_line_applies_the_runs_edit_unless_told_not_to(spaced, tmp_path, capsys, monkeypatch):
    import protolib.explain
    from protolib.cli import main

    explained = []
    draw = protolib.explain.explanation_figure

    def recording(explanation, *args, **kwargs):  # the real figure, its explanation kept to read the numbers
        explained.append(explanation)
        return draw(explanation, *args, **kwargs)

    monkeypatch.setattr(protolib.explain, "explanation_figure", recording)
    argv = ["explain", "--run", str(spaced["path"]), str(spaced["photo"]), "--class", "tench", "--device", "cpu"]
    expected, plain = logits_of(spaced["head"], spaced["feats"], spaced["edit"]), logits_of(spaced["head"], spaced["feats"], None)
    tench = int(spaced["head"].classes[0])

    assert main([*argv, "--out", str(tmp_path / "edited.png")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("applying the run's edit in space (cells left out of the pooling where")
    assert "--without-edit" in err[0]
    assert abs(explained[-1].logit - float(expected[tench])) < 1e-4

    assert main([*argv, "--out", str(tmp_path / "plain.png"), "--without-edit"]) == 0
    assert "edit in space" not in capsys.readouterr().err
    assert abs(explained[-1].logit - float(plain[tench])) < 1e-4 and explained[-1].left_out is None
    # the figure under the edit hatches the left-out cells (on the photo and on each heatmap)
    assert hatch_pixels(tmp_path / "edited.png") > 10 * max(hatch_pixels(tmp_path / "plain.png"), 50)

    # bad input is still one clear line and exit 2, nothing said about the edit
    assert main([*argv[:3], str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.png"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and not (tmp_path / "x.png").exists()


def test_the_explain_page_shows_the_edited_model(spaced):
    expected, plain = logits_of(spaced["head"], spaced["feats"], spaced["edit"]), logits_of(spaced["head"], spaced["feats"], None)
    tench = int(spaced["head"].classes[0])
    at = start("pages/explain.py", run=SPACED)
    assert not at.error, texts(at, "error")
    assert at.selectbox(key="w.img_file").value == spaced["photo"].name
    top = at.dataframe[0].value
    shown = float(top[top["class"] == "tench"]["logit"].iloc[0])
    assert abs(shown - float(expected[tench])) < 1e-4 and abs(shown - float(plain[tench])) > 1e-2
    captions = texts(at, "caption")
    assert "Intervene, Explain and the downloaded model apply it" in captions
    assert "cells left out of the pooling" in captions and "not hatched" in captions
    assert len(at.get("image")) == 1 + 1 + 3  # the photo (hatched), its part map, one heatmap per prototype
    # the unedited run on the same photo shows the model without the edit
    at = start("pages/explain.py")
    top = at.dataframe[0].value
    assert abs(float(top[top["class"] == "tench"]["logit"].iloc[0]) - float(plain[tench])) < 1e-4
    assert "Hatched" not in texts(at, "caption")
