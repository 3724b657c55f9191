"""The edit in space (``protolib.method.spatial``): cells where chosen parts are present are left out of the
pooling. Checked against an independent computation (the backbone run on real sample photos, the part maps
and the masked mean written out cell by cell, the model's own linear head), through a save and load of the
run, on the held-out split's cached cells, and through a TorchScript export loaded without protolib.

One small real run per part map reading: EfficientNet-Lite0, 2 classes x 6 photos of the sample, k = 3, found by
the paper's NMF (part maps ``clamp(f) . p``) and by ``unit-evidence`` (part maps read with damped loudness,
``clamp(f) / ||clamp(f)||^0.5 . p``): the edit leaves out the cells the run's own part maps draw.

The other half of the edit, *keeping* only where chosen parts are (``SpatialEdit.keep_where``: each photo pools
only the share of its cells where those parts' summed presence is highest), is checked the same way below.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from protolib.config import SAMPLE_DATA
from protolib.data import load_image
from protolib.data.folders import image_files

CLASSES = ["n01440764", "n02102040"]  # tench, English springer
PHOTOS = 3  # held-out photos per class

pytestmark = [
    pytest.mark.skipif(not (SAMPLE_DATA / "train").is_dir(), reason=f"the sample photos are not at {SAMPLE_DATA}"),
    pytest.mark.usefixtures("one_thread"),
]


@pytest.fixture(scope="module", params=["nmf", "unit-evidence"])
def run(request, tmp_path_factory, lite0):
    from protolib import run_decomposition

    tmp = tmp_path_factory.mktemp("spatial")
    run = run_decomposition(
        lite0, SAMPLE_DATA, classes=CLASSES, images_per_class=6, k=3, cache_dir=tmp / "cache", discovery=request.param
    )
    assert run.presence_damping == {"nmf": 0.0, "unit-evidence": 0.5}[request.param]
    return run


def read_cell(run, cell: torch.Tensor) -> torch.Tensor:
    """One cell's feature (D,) as the run's part maps read it, written out: clamped at 0, divided by its length to
    the power of the run's presence damping."""
    cell = cell.clamp_min(0)
    return cell / max(float(cell.norm()), 1e-12) ** run.presence_damping


@pytest.fixture(scope="module")
def photos(lite0):
    """Real held-out photos of both classes, preprocessed as the model expects: (6, 3, 224, 224)."""
    transform = lite0.preprocessing.transform()
    paths = [p for folder in CLASSES for p in image_files(SAMPLE_DATA / "val" / folder)[:PHOTOS]]
    return torch.stack([transform(load_image(p)) for p in paths])


def independent_logits(run, backbone, photos, leave_out, level=0.3):
    """The edited model written out without protolib's edit code: the backbone's grid, each chosen part's map
    (the cell as the run reads it . NMF part / its presence scale), the mean of the cells no chosen part reaches, the
    model's own linear head. Returns (logits, left-out mask (B, H, W))."""
    with torch.no_grad():
        grid = backbone.spatial_features(photos).double()  # (B, D, H, W)
    weight, bias = backbone.head_weight.double(), backbone.head_bias.double()
    position = {int(c): n for n, c in enumerate(run.classes)}
    B, D, H, W = grid.shape
    logits, masks = [], torch.zeros(B, H, W, dtype=torch.bool)
    for b in range(B):
        total, kept = torch.zeros(D, dtype=torch.float64), 0
        for h in range(H):
            for w in range(W):
                cell = grid[b, :, h, w]
                for label, i in leave_out:
                    c = position[label]
                    part = run.nmf_prototypes[c, i].double() / float(run.presence_scale[c, i])
                    if float(read_cell(run, cell) @ part) >= level:
                        masks[b, h, w] = True
                if not masks[b, h, w]:
                    total, kept = total + cell, kept + 1
        pooled = total / kept if kept else grid[b].mean(dim=(1, 2))
        logits.append(pooled @ weight.T + bias)
    return torch.stack(logits).float(), masks


def busy_part(run, backbone, photos) -> tuple[int, int]:
    """A (class label, prototype) whose cells are some but not all of at least one photo's grid."""
    from protolib.method.spatial import SpatialEdit, edited_pooling

    head = run.head(backbone)
    with torch.no_grad():
        features, _ = backbone(photos)
    for label in run.classes.tolist():
        for i in range(run.k):
            share = edited_pooling(head, features, SpatialEdit(((label, i),))).left_out_share
            if bool(((share > 0) & (share < 1)).any()):
                return label, i
    raise AssertionError("no part of the run is present on part of a photo")


def test_edited_logits_equal_an_independent_backbone_pass(run, lite0, photos):
    from protolib.method.spatial import SpatialEdit, edited_logits, edited_pooling

    label, i = busy_part(run, lite0, photos)
    other = int(run.classes[1]) if label == int(run.classes[0]) else int(run.classes[0])
    edit = SpatialEdit(((label, i), (other, 0)))
    head = run.head(lite0)
    with torch.no_grad():
        features, original = lite0(photos)
    logits, contributions = edited_logits(head, features, edit)
    expected, mask = independent_logits(run, lite0, photos, edit.leave_out)
    assert (logits - expected).abs().max() < 1e-4
    # the edit is real: some photo lost cells, and its logits moved
    pooling = edited_pooling(head, features, edit)
    assert torch.allclose(pooling.left_out_share, mask.flatten(1).float().mean(dim=1))
    changed = pooling.left_out_share > 0
    assert bool(changed.any()) and not bool(pooling.all_left_out.any())
    assert float((logits[changed] - original[changed]).abs().max()) > 1e-2
    # across classes: the one mask moves every class's logit; each decomposed logit is its contributions + bias
    assert float((logits[changed][:, :10] - original[changed][:, :10]).abs().min()) > 0
    sums = contributions.sum(dim=-1) + head.bias[head.classes]
    assert (sums - logits[:, head.classes]).abs().max() < 1e-4
    # with a scale edit on top, the head reads the edited pooling
    scale = torch.ones(2, run.k)
    scale[0, 1] = 0
    scaled, _ = edited_logits(head, features, edit, scale)
    assert (scaled[:, head.classes[0]] - (logits[:, head.classes[0]] - contributions[:, 0, 1])).abs().max() < 1e-4


def test_a_photo_whose_every_cell_is_left_out_keeps_the_original_pooling(run, lite0, photos):
    from protolib.method.spatial import SpatialEdit, edited_pooling

    head = run.head(lite0)
    with torch.no_grad():
        features, _ = lite0(photos)
    label = int(run.classes[0])
    everything = SpatialEdit(((label, 0), (label, 1), (label, 2)), level=1e-9)
    pooling = edited_pooling(head, features, everything)
    assert bool(pooling.all_left_out.all()) and bool((pooling.left_out_share == 1).all())
    assert (pooling.pooled - features.mean(dim=(1, 2))).abs().max() < 1e-5
    nothing = edited_pooling(head, features, None)
    assert (nothing.pooled - features.mean(dim=(1, 2))).abs().max() < 1e-5 and not bool(nothing.left_out_share.any())


def test_the_held_out_splits_cached_cells_give_the_same_edit(run, lite0, photos, tmp_path):
    from protolib.data.features import split_features
    from protolib.method.spatial import SpatialEdit, split_pooling

    # no cache: its float16 entries would differ from the fresh float32 pass by ~1e-4 in the logits
    sf = split_features(lite0, SAMPLE_DATA, "val", PHOTOS, CLASSES, cache_dir=False)
    edit = SpatialEdit((busy_part(run, lite0, photos),))
    head = run.head(lite0)
    pooled = split_pooling(head, sf.matrices, len(sf.paths), edit).pooled
    logits = head.logits(pooled, head.contributions(pooled))
    expected, _ = independent_logits(run, lite0, photos, edit.leave_out)  # the same photos in the same order
    assert (logits - expected).abs().max() < 1e-4
    with pytest.raises(ValueError, match="do not split"):
        split_pooling(head, sf.matrices, len(sf.paths) + 5, edit)  # 294 cells, not a multiple of 11


def test_the_edit_saves_with_the_run_and_bad_ones_are_refused(run, lite0, tmp_path):
    from protolib.method.spatial import KEY, SpatialEdit
    from protolib.runs import RunError, load_run, save_run
    from protolib.runs.schema import MANIFEST

    assert run.spatial_edit is None  # older runs and fresh ones have none
    label = int(run.classes[1])
    edit = SpatialEdit(((label, 2),), level=0.8)
    path = save_run(run.with_spatial_edit(edit, "test"), tmp_path / "spaced")
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest[KEY] == {"leave_out": [[label, 2]], "level": 0.8}
    loaded = load_run(path, lite0)
    assert loaded.spatial_edit == edit
    # kept through the other edits; removed by an empty one
    assert loaded.with_prototype_names({label: {0: "ears"}}).spatial_edit == edit
    assert loaded.with_scale(torch.ones(2, run.k), "none").spatial_edit == edit
    assert loaded.with_spatial_edit(None, "removed").spatial_edit is None
    with pytest.raises(ValueError, match="did not decompose"):
        run.with_spatial_edit(SpatialEdit(((999, 0),)), "x")
    for bad, says in [
        ({"leave_out": [[label, 3]]}, "prototype 3 of 3"),
        ({"leave_out": [[5, 0]]}, "did not decompose"),
        ({"leave_out": [[label, 0]], "level": -1}, "level"),
        ({"leave_out": "all"}, "list"),
        ({"leave_out": [[label, "0"]]}, "not \\[class label, prototype\\]"),
    ]:
        damaged = tmp_path / f"bad-{len(says)}-{abs(hash(says))}"
        save_run(run, damaged)
        (damaged / MANIFEST).write_text(json.dumps({**json.loads((damaged / MANIFEST).read_text()), KEY: bad}))
        with pytest.raises(RunError, match=says):
            load_run(damaged)


@pytest.mark.slow  # tracing or exporting the real model
def test_the_exported_model_applies_the_mask_without_protolib(run, lite0, photos, tmp_path):
    from protolib.export import export_model, export_torchscript, load_model, read_exported
    from protolib.method.spatial import SpatialEdit
    from protolib.runs import save_run

    edit = SpatialEdit((busy_part(run, lite0, photos),))
    path = save_run(run.with_spatial_edit(edit, "test"), tmp_path / "spaced")
    expected, _ = independent_logits(run, lite0, photos, edit.leave_out)
    with torch.no_grad():
        assert (load_model(path)(photos) - expected).abs().max() < 1e-4
    out = export_torchscript(path, tmp_path / "model.pt")
    _, meta = read_exported(out)
    assert meta["spatial_edit"]["leave_out"] == [list(edit.leave_out[0])]
    assert meta["spatial_edit"]["presence_damping"] == run.presence_damping
    torch.save(photos, tmp_path / "photos.pt")
    script = f"""
import json, sys, torch
model = torch.jit.load({str(out)!r})
with torch.no_grad():
    logits = model(torch.load({str(tmp_path / "photos.pt")!r}, weights_only=True))
    one = model(torch.load({str(tmp_path / "photos.pt")!r}, weights_only=True)[:1])
torch.save((logits, one), {str(tmp_path / "logits.pt")!r})
print(json.dumps({{"protolib": any(m.startswith("protolib") for m in sys.modules)}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["protolib"] is False
    logits, one = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert (logits - expected).abs().max() < 1e-4 and (one - expected[:1]).abs().max() < 1e-4
    _, unedited = lite0(photos)
    assert float((logits - unedited).abs().max()) > 1e-2  # the file carries the edit
    # torch.export's program (.pt2) applies it too
    program = torch.export.load(str(export_model(path, tmp_path / "model.pt2")))
    with torch.no_grad():
        assert (program.module()(photos[:4]) - expected[:4]).abs().max() < 1e-4


# -- keeping only where chosen parts are -------------------------------------------------------------------
def independent_kept_logits(run, backbone, photos, keep_where, share):
    """Per photo, the ``share`` of its cells with the highest summed presence of the kept parts (the cell as the run
    reads it . NMF part / its presence scale), their mean, the model's own head; also the kept cells (B, H, W)."""
    with torch.no_grad():
        grid = backbone.spatial_features(photos).double()  # (B, D, H, W)
    weight, bias = backbone.head_weight.double(), backbone.head_bias.double()
    position = {int(c): n for n, c in enumerate(run.classes)}
    B, _, H, W = grid.shape
    n = max(1, round(share * H * W))
    logits, kept = [], torch.zeros(B, H, W, dtype=torch.bool)
    for b in range(B):
        scores = []
        for h in range(H):
            for w in range(W):
                cell = read_cell(run, grid[b, :, h, w])
                score = sum(
                    float(cell @ (run.nmf_prototypes[position[c], i].double() / float(run.presence_scale[position[c], i])))
                    for c, i in keep_where
                )
                scores.append((score, h, w))
        for _, h, w in sorted(scores, key=lambda t: -t[0])[:n]:
            kept[b, h, w] = True
        cells = grid[b].permute(1, 2, 0)[kept[b]]
        logits.append(cells.mean(dim=0) @ weight.T + bias)
    return torch.stack(logits).float(), kept


def test_a_keep_edit_pools_only_where_the_parts_are_most_present(run, lite0, photos):
    from protolib.method.spatial import SpatialEdit, edited_logits, edited_pooling

    labels = run.classes.tolist()
    edit = SpatialEdit(keep_where=((labels[0], 0), (labels[1], 2)), keep_share=0.2)
    head = run.head(lite0)
    with torch.no_grad():
        features, original = lite0(photos)
    logits, contributions = edited_logits(head, features, edit)
    expected, kept = independent_kept_logits(run, lite0, photos, edit.keep_where, 0.2)
    assert (logits - expected).abs().max() < 1e-4
    pooling = edited_pooling(head, features, edit)
    assert torch.allclose(pooling.left_out_share, 1 - kept.flatten(1).float().mean(dim=1))
    assert float((logits - original).abs().max()) > 1e-2  # the edit is real
    # exact: every decomposed logit is its contributions + bias
    assert (contributions.sum(dim=-1) + head.bias[head.classes] - logits[:, head.classes]).abs().max() < 1e-4
    # with a leave-out part as well, a cell goes when either rule says so
    both = SpatialEdit(((labels[0], 1),), 0.3, edit.keep_where, 0.2)
    share = edited_pooling(head, features, both).left_out_share
    assert bool((share >= pooling.left_out_share).all())


def test_a_keep_edit_saves_with_the_run_and_bad_ones_are_refused(run, lite0, tmp_path):
    from protolib.method.spatial import KEY, SpatialEdit
    from protolib.runs import RunError, load_run, save_run
    from protolib.runs.schema import MANIFEST

    label = int(run.classes[0])
    edit = SpatialEdit(keep_where=((label, 1),), keep_share=0.25)
    path = save_run(run.with_spatial_edit(edit, "test"), tmp_path / "kept")
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest[KEY]["keep_where"] == [[label, 1]] and manifest[KEY]["keep_share"] == 0.25
    assert load_run(path, lite0).spatial_edit == edit
    assert "only the 25 % of each photo's cells" in edit.describe(lite0.class_names)
    # an edit without keep_where writes the manifest it always did
    assert SpatialEdit(((label, 1),)).to_manifest() == {"leave_out": [[label, 1]], "level": 0.3}
    for bad, says in [
        ({"leave_out": [], "keep_where": [[label, 0]], "keep_share": 0}, "keep_share"),
        ({"leave_out": [], "keep_where": [[label, 0]], "keep_share": 1.5}, "keep_share"),
        ({"leave_out": [], "keep_where": [[label, 7]]}, "prototype 7 of 3"),
        ({"leave_out": [], "keep_where": "all"}, "keep_where is not a list"),
    ]:
        damaged = tmp_path / f"bad-{abs(hash(json.dumps(bad)))}"
        save_run(run, damaged)
        (damaged / MANIFEST).write_text(json.dumps({**json.loads((damaged / MANIFEST).read_text()), KEY: bad}))
        with pytest.raises(RunError, match=says):
            load_run(damaged)


@pytest.mark.slow  # tracing the real model
def test_the_exported_model_keeps_the_same_cells(run, lite0, photos, tmp_path):
    from protolib.export import export_torchscript, load_model, read_exported
    from protolib.method.spatial import SpatialEdit
    from protolib.runs import save_run

    labels = run.classes.tolist()
    edit = SpatialEdit(keep_where=((labels[0], 0), (labels[1], 1)))
    path = save_run(run.with_spatial_edit(edit, "test"), tmp_path / "kept")
    expected, _ = independent_kept_logits(run, lite0, photos, edit.keep_where, edit.keep_share)
    with torch.no_grad():
        assert (load_model(path)(photos) - expected).abs().max() < 1e-4
    out = export_torchscript(path, tmp_path / "model.pt")
    _, meta = read_exported(out)
    assert meta["spatial_edit"]["keep_where"] == [list(pair) for pair in edit.keep_where]
    with torch.no_grad():
        assert (torch.jit.load(str(out))(photos) - expected).abs().max() < 1e-4
