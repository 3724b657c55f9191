"""The synthetic parts benchmark and its small CNN: determinism, ground truth, image folder, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder

from protolib.backbones import BackboneError, load_backbone
from protolib.backbones.parts_net import FEATURE_DIM, MEAN, STD, PartsNet, load_parts_net, save_parts_net
from protolib.benchmarks.toy_model import to_input, train_parts_net
from protolib.data.synthetic import (
    MAX_CLASSES,
    NUM_PARTS,
    PART_KINDS,
    PIXEL_NOISE,
    class_names,
    make_parts_dataset,
    part_names,
    parts_of_class,
    read_image_folder,
    write_image_folder,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _same(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.label == y.label
        assert np.array_equal(x.image, y.image)
        assert np.array_equal(x.keypoints, y.keypoints, equal_nan=True)
        assert np.array_equal(x.visible, y.visible)


# -- the dataset ---------------------------------------------------------------------------------
def test_deterministic_for_a_seed_and_prefix_stable():
    a = make_parts_dataset(3, seed=7, num_classes=3)
    _same(a, make_parts_dataset(3, seed=7, num_classes=3))
    # sample i of class c depends only on (seed, c, i): a smaller n is a prefix of each class
    small = make_parts_dataset(2, seed=7, num_classes=3)
    _same(small, [s for c in range(3) for s in a[3 * c : 3 * c + 2]])
    other = make_parts_dataset(3, seed=8, num_classes=3)
    assert not any(np.array_equal(x.image, y.image) for x, y in zip(a, other, strict=True))


def test_sample_layout():
    samples = make_parts_dataset(2, seed=0, num_classes=MAX_CLASSES)
    assert [s.label for s in samples] == [c for c in range(MAX_CLASSES) for _ in range(2)]
    assert len(part_names()) == NUM_PARTS == 22
    for s in samples:
        assert s.image.shape == (112, 112, 3) and s.image.dtype == np.uint8
        assert s.keypoints.shape == (NUM_PARTS, 2) and s.visible.shape == (NUM_PARTS,) and s.visible.dtype == bool
        own = np.zeros(NUM_PARTS, bool)
        own[parts_of_class(s.label)] = True
        assert np.isfinite(s.keypoints[own]).all()
        assert np.isnan(s.keypoints[~own]).all() and not s.visible[~own].any()


def test_part_table_forces_looking_at_parts():
    """Every part kind is unique, yet no single shape or colour names a class."""
    assert len({(k.shape, k.colour) for k in PART_KINDS}) == NUM_PARTS
    assert len(set(part_names())) == NUM_PARTS
    for label in range(MAX_CLASSES):
        kinds = [PART_KINDS[i] for i in parts_of_class(label)]
        assert 3 <= len(kinds) <= 4
        assert len({k.shape for k in kinds}) == len(kinds) and len({k.colour for k in kinds}) == len(kinds)
    for attr in ("shape", "colour"):
        for value in {getattr(k, attr) for k in PART_KINDS}:
            assert len({k.label for k in PART_KINDS if getattr(k, attr) == value}) >= 2, value


def test_class_names_sort_in_label_order():
    names = class_names(MAX_CLASSES)
    assert names == sorted(names) and class_names(4) == names[:4]
    with pytest.raises(ValueError):
        class_names(MAX_CLASSES + 1)
    with pytest.raises(ValueError):
        make_parts_dataset(1, seed=0, num_classes=0)


@pytest.mark.parametrize("size", [64, 112, 224])
def test_visible_keypoints_sit_on_their_part(size):
    samples = make_parts_dataset(12, seed=3, size=size, num_classes=MAX_CLASSES)
    in_frame = hidden_in_frame = 0
    for s in samples:
        assert s.image.shape == (size, size, 3)
        for p in parts_of_class(s.label):
            col, row = np.floor(s.keypoints[p] + 0.5).astype(int)
            inside = 0 <= row < size and 0 <= col < size
            if not inside:
                assert not s.visible[p]  # a part outside the image is never visible
                continue
            in_frame += 1
            hidden_in_frame += not s.visible[p]
            if s.visible[p]:  # the centre pixel has the part's colour or its dark texture colour, up to noise
                pixel = s.image[row, col].astype(int)
                kind = PART_KINDS[p]
                gap = min(np.abs(pixel - np.array(kind.rgb)).max(), np.abs(pixel - np.array(kind.rgb_dark)).max())
                assert gap <= PIXEL_NOISE, (p, kind.name, pixel)
    # occluders hide some parts, but most parts in the frame are visible
    assert 0 < hidden_in_frame < 0.25 * in_frame


def test_image_folder_round_trip(tmp_path):
    samples = make_parts_dataset(3, seed=5, num_classes=4)
    out = write_image_folder(samples, tmp_path, "val")
    assert out == tmp_path / "val" and (out / "alpha" / "00000.png").is_file() and (out / "keypoints.csv").is_file()
    _same(read_image_folder(tmp_path, "val"), samples)
    # an ordinary ImageFolder reads it with the same labels (keypoints.csv is not a class folder)
    folder = ImageFolder(str(out))
    assert folder.classes == class_names(4)
    assert folder.targets == [s.label for s in samples]
    assert np.array_equal(np.asarray(folder[5][0]), samples[5].image)
    write_image_folder(samples[:2], tmp_path, "val")  # a rewrite replaces the split, leaving no stale images
    _same(read_image_folder(tmp_path, "val"), samples[:2])
    assert sorted(p.name for p in out.rglob("*.png")) == ["00000.png", "00001.png"]


# -- the small CNN -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """A short run (64 px, 60 images per class, 4 epochs: a few seconds) that shares its model with tests."""
    train = make_parts_dataset(60, seed=0, size=64)
    val = make_parts_dataset(25, seed=1, size=64)
    epochs_seen = []
    model, acc = train_parts_net(train, val, epochs=4, seed=0, progress=lambda e, n, loss, a: epochs_seen.append(e))
    assert epochs_seen == [1, 2, 3, 4]
    return model, acc, val


def test_short_training_beats_chance(trained):
    _, acc, _ = trained
    assert acc >= 0.8  # chance is 0.25 (0.91-0.96 over seeds); the default run (112 px, 150 per class) reaches 1.0


def test_logits_are_linear_head_on_mean_pooled_features(trained):
    """The method's exactness precondition: nothing between global average pooling and one Linear."""
    model, _, val = trained
    x = to_input([s.image for s in val[:16]])
    with torch.no_grad():
        feats, logits = model.forward_features(x), model(x)
    assert feats.shape == (16, FEATURE_DIM, 8, 8) and (feats >= 0).all()
    manual = feats.mean(dim=(2, 3)) @ model.head.weight.T + model.head.bias
    assert torch.allclose(logits, manual, atol=1e-5, rtol=0)


def test_feature_map_size_at_default_input():
    model = PartsNet(4).eval()
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, 3, 112, 112)).shape == (1, FEATURE_DIM, 14, 14)


def test_training_is_deterministic_and_leaves_global_state_alone():
    train = make_parts_dataset(6, seed=0, size=48, num_classes=2)
    rng_before, threads = torch.random.get_rng_state(), torch.get_num_threads()
    a, acc_a = train_parts_net(train, train, epochs=1, seed=4)
    b, acc_b = train_parts_net(train, train, epochs=1, seed=4)
    assert torch.equal(torch.random.get_rng_state(), rng_before) and torch.get_num_threads() == threads
    assert acc_a == acc_b
    for (name, ta), tb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name


def test_save_load_round_trip_bit_exact(trained, tmp_path):
    model, acc, val = trained
    names = class_names(model.num_classes)
    path = save_parts_net(model, tmp_path / "net.safetensors", names, 48, metadata={"val_accuracy": acc})
    meta = json.loads((tmp_path / "net.json").read_text())
    assert meta["mean"] == list(MEAN) and meta["std"] == list(STD) and meta["val_accuracy"] == acc
    assert meta["labels"] == names and meta["size"] == 48
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.json", "net.safetensors"]  # no temp files left
    loaded = load_parts_net(path)
    assert not loaded.training
    for (name, ta), tb in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(ta, tb), name
    x = to_input([s.image for s in val[:8]])
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # by name, as a run records it: the same logits, its size and class names, refused when altered
    backbone = load_backbone(f"parts_net:{path}")
    assert backbone.name == f"parts_net:{path.resolve()}" and backbone.class_names == names
    assert backbone.preprocessing.crop_size == 48
    assert torch.allclose(backbone(x)[1], model(x).detach(), atol=1e-6)
    (tmp_path / "net.json").write_text(json.dumps({**meta, "mean": [0.5, 0.5, 0.5]}))
    with pytest.raises(BackboneError, match="normalisation"):
        load_backbone(f"parts_net:{path}")
    path.write_bytes(b"not safetensors")
    (tmp_path / "net.json").write_text(json.dumps(meta))
    with pytest.raises(BackboneError, match="not a PartsNet"):
        load_backbone(f"parts_net:{path}")
