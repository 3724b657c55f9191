"""The edit in space that *keeps* only where chosen parts are (``SpatialEdit.keep_where``): each photo pools only
the share of its cells where those parts' summed presence is highest. Checked against an independent computation
(the backbone on real sample photos, the part maps and the kept cells' mean written out, the model's own linear
head), through a save and load of the run, and through the exported model.

One small real run: EfficientNet-Lite0, 2 classes x 6 photos of the sample, k = 3.
"""

from __future__ import annotations

import json

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


@pytest.fixture(scope="module")
def run(tmp_path_factory, lite0):
    from protolib import run_decomposition

    tmp = tmp_path_factory.mktemp("keep")
    return run_decomposition(lite0, SAMPLE_DATA, classes=CLASSES, images_per_class=6, k=3, cache_dir=tmp / "cache")


@pytest.fixture(scope="module")
def photos(lite0):
    transform = lite0.preprocessing.transform()
    paths = [p for folder in CLASSES for p in image_files(SAMPLE_DATA / "val" / folder)[:PHOTOS]]
    return torch.stack([transform(load_image(p)) for p in paths])


def independent_logits(run, backbone, photos, keep_where, share):
    """Per photo, the ``share`` of its cells with the highest summed presence of the kept parts (clamped features .
    NMF part / its presence scale), their mean, the model's own head; also the kept cells (B, H, W)."""
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
                cell = grid[b, :, h, w].clamp_min(0)
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
    expected, kept = independent_logits(run, lite0, photos, edit.keep_where, 0.2)
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
    expected, _ = independent_logits(run, lite0, photos, edit.keep_where, edit.keep_share)
    with torch.no_grad():
        assert (load_model(path)(photos) - expected).abs().max() < 1e-4
    out = export_torchscript(path, tmp_path / "model.pt")
    _, meta = read_exported(out)
    assert meta["spatial_edit"]["keep_where"] == [list(pair) for pair in edit.keep_where]
    with torch.no_grad():
        assert (torch.jit.load(str(out))(photos) - expected).abs().max() < 1e-4
