"""Feature extraction per class of a split has one home (``data.features.class_features``): the decomposition,
the evaluation and the probe all read a split through it. On the sample photos with the real Lite0: what it
yields per class, what it does with unreadable photos, and that the decomposition factorises exactly the
features the evaluation reads."""

from __future__ import annotations

import shutil

import pytest
import torch

from protolib.data import BadImage, scan_split
from protolib.data.features import Features, class_features, extract_features, split_features
from protolib.evaluation.metrics import training_matrices
from protolib.method import feature_matrix
from protolib.pipeline import run_decomposition
from tests.helpers import SPRINGER, TENCH

pytestmark = pytest.mark.usefixtures("one_thread")
UNREADABLE = "n03000684"  # chain saw: a class of the model whose folder holds no readable photo


@pytest.fixture
def data(data_dir, tmp_path):
    """3 photos of tench and springer each, one broken file beside the springers, and a class of broken files."""
    root = tmp_path / "data"
    for folder in (TENCH, SPRINGER):
        (root / "train" / folder).mkdir(parents=True)
        for photo in sorted((data_dir / "train" / folder).iterdir())[:3]:
            shutil.copy(photo, root / "train" / folder / photo.name)
    (root / "train" / SPRINGER / "zz-broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (root / "train" / UNREADABLE).mkdir()
    for i in range(2):
        (root / "train" / UNREADABLE / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return root


def test_each_class_gets_its_own_features_and_the_unreadable_are_said(lite0, data, tmp_path):
    images = scan_split(data, "train", lite0.class_names, lite0.wnids)
    problems: list = []
    seen = list(class_features(lite0, images, tmp_path / "cache", problems=problems))
    assert [cls.folder for cls, _ in seen] == [c.folder for c in images.classes]
    by_folder = dict((cls.folder, feats) for cls, feats in seen)
    assert isinstance(by_folder[UNREADABLE], BadImage)  # yielded, not raised: the caller decides
    assert [p.path for p in problems] == [str(data / "train" / SPRINGER / "zz-broken.jpg")]
    for folder in (TENCH, SPRINGER):
        feats = by_folder[folder]
        assert isinstance(feats, Features) and len(feats.paths) == 3
        alone = extract_features(lite0, images.images[folder], cache_dir=tmp_path / "cache")  # the same cache entry
        assert torch.equal(feats.feats, alone.feats) and torch.equal(feats.logits, alone.logits)


def test_the_evaluation_raises_an_unreadable_class_and_the_decomposition_skips_it(lite0, data, tmp_path):
    with pytest.raises(BadImage):
        split_features(lite0, data, "train", cache_dir=tmp_path / "cache")
    run = run_decomposition(lite0, data, "train", k=2, cache_dir=tmp_path / "cache")
    assert any(UNREADABLE in path and "class skipped" in reason for path, reason in run.manifest["problems"])
    assert any(path.endswith("zz-broken.jpg") for path, _ in run.manifest["problems"])
    evaluated = split_features(lite0, data, "train", classes=[TENCH, SPRINGER], cache_dir=tmp_path / "cache")
    assert [p.path for p in evaluated.problems] == [str(data / "train" / SPRINGER / "zz-broken.jpg")]
    # the decomposition factorised exactly the features the evaluation reads, class by class
    for label, matrix in zip(run.classes.tolist(), training_matrices(run, lite0, tmp_path / "cache")):
        assert torch.equal(matrix, feature_matrix(evaluated.matrices[label]))
