"""Every row of the bad-input table: a clear one-line error (command line: exit code 2, no traceback) or the
right behaviour, on real photos and the real embedded model."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from protolib.backbones import BackboneError, load_weights_file, resolve_device
from protolib.cli import main
from protolib.data import load_image, scan_split, split_images
from protolib.files import recover_swap
from protolib.pipeline import run_decomposition
from protolib.runs import RunError, load_run, save_run
from protolib.runs.schema import MANIFEST, TENSORS
from tests.helpers import SPRINGER, TENCH, cli


@pytest.fixture(scope="module")
def run(lite0, data_dir, feature_cache):
    return run_decomposition(lite0, data_dir, classes=[TENCH, SPRINGER], images_per_class=6, k=3, cache_dir=feature_cache)


@pytest.fixture
def saved(run, tmp_path):
    return save_run(run, tmp_path / "run")


# -- --overwrite, and an interrupted swap ---------------------------------------------------------------
def test_overwrite_replaces_only_a_run_or_an_empty_folder(run, tmp_path):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not replaced"):
        save_run(run, mine, overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_run(save_run(run, empty, overwrite=True)).k == 3
    again = save_run(run, empty, overwrite=True)  # a run of ours is replaced
    assert (again / MANIFEST).is_file()


def test_an_interrupted_overwrite_is_recovered(saved):
    old = saved.with_name(f".{saved.name}.old")
    os.replace(saved, old)  # as if the process died between the two renames
    assert not saved.exists()
    assert recover_swap(saved) and saved.is_dir() and not old.exists()
    assert load_run(saved).k == 3


# -- command-line arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_images_per_class_must_be_positive(capsys, tmp_path, value):
    with pytest.raises(SystemExit) as exit_:
        main(["decompose", "--images-per-class", value, "--out", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert "--images-per-class" in capsys.readouterr().err


def test_a_device_that_does_not_exist(capsys, tmp_path):
    with pytest.raises(BackboneError, match="gpu0"):
        resolve_device("gpu0")
    code, err = cli(capsys, "decompose", "--device", "gpu0", "--out", str(tmp_path / "r"))
    assert code == 2 and "gpu0" in err


def test_explain_a_class_the_run_did_not_decompose(saved, data_dir, capsys, tmp_path):
    photo = sorted((data_dir / "val" / TENCH).iterdir())[0]
    code, err = cli(
        capsys,
        "explain",
        "--run",
        str(saved),
        str(photo),
        "--class",
        "goldfish",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "e.png"),
    )
    assert code == 2 and "not a class this run decomposed" in err and "tench" in err


# -- damaged runs -------------------------------------------------------------------------------------
def _manifest(path):
    return json.loads((path / MANIFEST).read_text())


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda m: [m], "not a JSON object"),
        (lambda m: {k: v for k, v in m.items() if k != "fingerprint"}, "fingerprint"),
        (lambda m: {**m, "strategy": "magic"}, "magic"),
    ],
)
def test_a_damaged_manifest_is_refused_with_its_reason(saved, damage, reason):
    (saved / MANIFEST).write_text(json.dumps(damage(_manifest(saved))))
    with pytest.raises(RunError, match=reason):
        load_run(saved)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda t: t.__setitem__("classes", torch.tensor([0, -1])), "negative"),
        (lambda t: t["refined.optimized"].__setitem__((0, 0, 0), float("nan")), "NaN"),
    ],
)
def test_damaged_tensors_are_refused(saved, change, reason):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(saved / TENSORS))
    change(tensors)
    save_file(tensors, str(saved / TENSORS))
    with pytest.raises(RunError, match=reason):
        load_run(saved)


def test_labels_outside_the_model_or_altered_prototypes_are_refused(saved, lite0):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(saved / TENSORS))
    tensors["classes"] = torch.tensor([0, 5000])
    save_file(tensors, str(saved / TENSORS))
    with pytest.raises(RunError, match="1000 classes"):
        load_run(saved, lite0)
    tensors["classes"] = torch.tensor([0, 217])
    tensors["refined.optimized"] = tensors["refined.optimized"] * 1.5  # silently wrong logits before
    save_file(tensors, str(saved / TENSORS))
    with pytest.raises(RunError, match="no longer sum"):
        load_run(saved, lite0)


# -- weights ------------------------------------------------------------------------------------------
def test_weights_files_that_cannot_be_used(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))

    class Code:
        def __reduce__(self):
            return (print, ("this would run",))

    torch.save({"head": Code()}, tmp_path / "pickle.pt")
    torch.save({"weight": torch.tensor([1.0, float("nan")])}, tmp_path / "nan.pt")
    expected = {"empty.pt": "is empty", "random.pt": "not a weights file", "pickle.pt": "state_dict", "nan.pt": "NaN"}
    for name, words in expected.items():
        with pytest.raises(BackboneError) as error:
            load_weights_file(tmp_path / name)
        message = str(error.value)
        assert words in message and "weights_only=False" not in message and "file an issue" not in message, name


def test_a_model_with_a_nan_head_is_refused(tmp_path, lite0, capsys):
    state = {k: v.clone() for k, v in lite0.model.state_dict().items()}
    head = next(k for k in state if k.endswith("classifier.weight"))
    state[head][3, 7] = float("nan")
    torch.save(state, tmp_path / "nan-head.pt")
    code, err = cli(
        capsys, "decompose", "--weights", str(tmp_path / "nan-head.pt"), "--out", str(tmp_path / "r"), "--device", "cpu"
    )
    assert code == 2 and "NaN" in err and not (tmp_path / "r").exists()


# -- images -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, dtype, top", [("I;16", np.uint16, 65535), ("I", np.int32, 65535), ("F", np.float32, 3.5)])
def test_deep_images_are_scaled_to_8_bits(tmp_path, mode, dtype, top):
    ramp = (np.linspace(0, top, 64 * 64).reshape(64, 64)).astype(dtype)
    path = tmp_path / f"deep-{mode.replace(';', '')}.{'png' if mode == 'I;16' else 'tif'}"
    Image.fromarray(ramp).save(path)
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (64, 64, 3) and pixels.min() == 0 and pixels.max() == 255
    assert 100 < pixels.mean() < 155  # a ramp, not a white (or black) image


def test_a_class_whose_photos_are_all_unreadable_is_skipped_and_listed(lite0, data_dir, tmp_path):
    root = tmp_path / "data"
    for folder in (TENCH, SPRINGER):
        shutil.copytree(data_dir / "train" / folder, root / "train" / folder)
    broken = root / "train" / "n03000684"
    broken.mkdir()
    for i in range(4):
        (broken / f"broken{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    run = run_decomposition(lite0, root, images_per_class=5, k=3, cache_dir=tmp_path / "cache")
    assert sorted(run.classes.tolist()) == [0, 217]
    assert any("n03000684" in path and "class skipped" in reason for path, reason in run.manifest["problems"])


# -- the layout people have: DIR/<class>/<images> ------------------------------------------------------
def test_an_image_folder_without_splits_is_split_by_file_name(lite0, data_dir, tmp_path, capsys):
    root = tmp_path / "imagefolder"
    for folder in (TENCH, SPRINGER):
        shutil.copytree(data_dir / "train" / folder, root / folder)
    train = scan_split(root, "train", lite0.class_names, lite0.wnids)
    val = scan_split(root, "val", lite0.class_names, lite0.wnids)
    for folder in (TENCH, SPRINGER):
        held, kept = set(val.images[folder]), set(train.images[folder])
        assert not held & kept and len(held | kept) == 100 and 10 <= len(held) <= 30
        assert split_images(root, "val", folder) == sorted(held)  # the same split from every entry point
    out = tmp_path / "run"
    common = ["--data", str(root), "--k", "2", "--images-per-class", "8", "--device", "cpu", "--cache", str(tmp_path / "c")]
    assert main(["decompose", "--out", str(out), *common]) == 0
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(out),
                "--data",
                str(root),
                "--device",
                "cpu",
                "--cache",
                str(tmp_path / "c"),
                "--images-per-class",
                "4",
                "--json",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["n_images"] == 8 and figures["max_abs_logit_diff"] <= 1e-4
