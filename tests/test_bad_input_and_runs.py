"""Bad input gets a clear error or a reported skip, never a crash or a half-written run; runs
round-trip and refuse a model they were not made from; the command line works end to end."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from protolib.backbones import load_backbone
from protolib.cli import main
from protolib.data import BadImage, DataError, load_image
from protolib.pipeline import run_decomposition
from protolib.runs import RunError, load_run, save_run

TENCH, HORN = "n01440764", "n03394916"


@pytest.fixture
def messy(data_dir, tmp_path):
    """A data folder with real photos plus every kind of odd file."""
    root = tmp_path / "messy"
    good = root / "train" / TENCH
    good.mkdir(parents=True)
    photos = sorted((data_dir / "train" / TENCH).iterdir())[:6]
    for p in photos:
        shutil.copy(p, good / p.name)
    base = Image.open(photos[0])
    base.convert("RGBA").save(good / "alpha.png")
    base.convert("L").save(good / "gray.jpg")
    base.convert("CMYK").save(good / "cmyk.jpg")
    (good / "corrupt.jpg").write_bytes(photos[1].read_bytes()[:2000])
    (good / "notes.txt").write_text("not an image")
    (good / "fake.jpg").write_text("also not an image")
    (root / "train" / HORN).mkdir()  # empty class folder
    few = root / "train" / "n03000684"  # chain saw: fewer images than k
    few.mkdir()
    shutil.copy(sorted((data_dir / "train" / "n03000684").iterdir())[0], few / "one.jpg")
    (root / "train" / "not_a_class").mkdir()
    return root


def test_odd_images_open_as_rgb(messy):
    folder = messy / "train" / TENCH
    for name in ("alpha.png", "gray.jpg", "cmyk.jpg"):
        image = load_image(folder / name)
        assert image.mode == "RGB" and image.size == (224, 224)
    for name in ("corrupt.jpg", "fake.jpg", "notes.txt"):
        with pytest.raises(BadImage, match="not a readable image"):
            load_image(folder / name)


def test_decomposition_reports_and_skips_what_it_cannot_use(messy, lite0, tmp_path):
    run = run_decomposition(lite0, messy, k=3, cache_dir=tmp_path / "cache")
    assert run.classes.tolist() == [0]  # only the tench folder is usable
    assert run.manifest["classes"][0]["n_images"] == 9  # 6 photos + alpha, gray, cmyk
    reasons = "\n".join(f"{p} {r}" for p, r in run.manifest["problems"])
    for expected in ("corrupt.jpg", "fake.jpg", "notes.txt", HORN, "n03000684", "not_a_class"):
        assert expected in reasons, expected
    assert (run.refined_by_strategy["optimized"].sum(dim=1) - lite0.head_weight[0]).abs().max() < 1e-6


def test_clear_errors_for_unusable_data(tmp_path, lite0, messy):
    with pytest.raises(DataError, match="does not exist"):
        run_decomposition(lite0, tmp_path / "nowhere")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        run_decomposition(lite0, tmp_path / "empty")
    with pytest.raises(ValueError, match="not sensible"):
        run_decomposition(lite0, messy, k=500)
    with pytest.raises(DataError, match="enough images"):
        run_decomposition(lite0, messy, classes=["n03000684"], k=3)


@pytest.fixture(scope="module")
def small_run(lite0, data_dir, feature_cache):
    return run_decomposition(lite0, data_dir, classes=[TENCH, HORN], images_per_class=8, k=3, cache_dir=feature_cache)


def test_run_round_trips_and_refuses_other_weights(small_run, lite0, tmp_path):
    path = save_run(small_run, tmp_path / "run")
    loaded = load_run(path, lite0)
    for name, value in small_run.refined_by_strategy.items():
        assert torch.equal(loaded.refined_by_strategy[name], value)
    assert loaded.manifest["versions"]["torch"] and loaded.params["k"] == loaded.k == 3
    with pytest.raises(RunError, match="cannot be applied"):
        load_run(path, load_backbone(weights="random"))
    with pytest.raises(FileExistsError):
        save_run(small_run, path)


def test_damaged_or_missing_runs_are_clear_errors(small_run, tmp_path):
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path)
    path = save_run(small_run, tmp_path / "run")
    (path / "prototypes.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunError, match="damaged"):
        load_run(path)


def test_a_failed_save_leaves_nothing_half_written(small_run, tmp_path, monkeypatch):
    import protolib.runs.store as runs

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runs, "save_file", explode)
    with pytest.raises(OSError):
        save_run(small_run, tmp_path / "run")
    assert list(tmp_path.iterdir()) == []


def test_intervention_scales_contributions_without_the_backbone(small_run, lite0):
    head = small_run.head(lite0)
    pooled = torch.rand(4, head.weight.shape[1])
    logits, contributions = head(pooled)
    scale = torch.ones(2, 3)
    scale[0, 1] = 0
    edited = head.logits(pooled, contributions, scale)
    assert torch.allclose(edited[:, 0], logits[:, 0] - contributions[:, 0, 1], atol=1e-5)
    untouched = [i for i in range(1000) if i not in (0, 566)]
    assert torch.equal(edited[:, untouched], logits[:, untouched])


def test_command_line_end_to_end(data_dir, tmp_path, monkeypatch, feature_cache, capsys):
    monkeypatch.setenv("PROTOLIB_CACHE", str(feature_cache))
    out = tmp_path / "run"
    args = ["--data", str(data_dir), "--classes", TENCH, HORN, "--images-per-class", "8", "--k", "3"]
    assert main(["decompose", *args, "--out", str(out), "--device", "cpu"]) == 0
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(out),
                "--data",
                str(data_dir),
                "--images-per-class",
                "5",
                "--json",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["max_abs_logit_diff"] <= 1e-4 and figures["k"] == 3
    image = sorted((data_dir / "val" / HORN).iterdir())[0]
    assert main(["explain", "--run", str(out), str(image), "--out", str(tmp_path / "e.png")]) == 0
    assert Image.open(tmp_path / "e.png").size[0] > 600
    # mistakes are one clear line, not a traceback
    assert main(["decompose", *args, "--out", str(out)]) == 2
    assert main(["decompose", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert main(["decompose", "--data", str(data_dir), "--backbone", "vgg16", "--out", str(tmp_path / "y")]) == 2
    assert main(["explain", "--run", str(tmp_path), str(image)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "does not exist" in err and "unknown backbone" in err and "not a run" in err
