"""Linear probes (any backbone, VGG included, on data it was not trained for) and fine-tuned
checkpoints with their own classes: both decompose exactly and reload from their runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision import models
from torchvision.models.vgg import cfgs, make_layers

from protolib.backbones import BackboneError, WeightsMissing, load_backbone
from protolib.backbones.probe_models import ProbeBackbone, build_vgg
from protolib.cli import main
from protolib.data import DataError
from protolib.evaluation.metrics import evaluate_run
from protolib.pipeline import run_decomposition
from protolib.probe import fit_linear_head, fit_probe
from protolib.runs import load_run, save_run

pytestmark = pytest.mark.usefixtures("one_thread")

COLOURS = {"0": (220, 40, 40), "1": (40, 170, 60), "2": (40, 80, 225)}


def write_folder(root, splits=(("train", 4), ("val", 2)), names=COLOURS):
    """A tiny image folder: one colour per class (random texture on top), 64 px PNGs."""
    rng = np.random.default_rng(0)
    for split, n in splits:
        for folder, colour in names.items():
            (root / split / folder).mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / folder / f"{i}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "data")


@pytest.fixture
def r10_weights(tmp_path):
    """Reproducible 'random' weights: a probe must be rebuilt from its manifest, so they live in a file."""
    torch.manual_seed(0)
    path = tmp_path / "resnet10t.safetensors"
    save_file(load_backbone("timm:resnet10t", weights="random").model.state_dict(), str(path))
    return str(path)


def assert_exact(run, backbone, data, split="val"):
    figures = evaluate_run(run, backbone, data, split, cache_dir=False)
    assert figures["max_abs_logit_diff"] <= 1e-4 * max(1.0, run.head(backbone).weight.abs().max().item())
    assert figures["top1_prototype"] == figures["top1_original"]
    return figures


@pytest.mark.slow
def test_probe_on_imagenette_is_accurate_and_decomposes_exactly(lite0, data_dir, feature_cache, tmp_path):
    """The issue's check: a probe on EfficientNet-Lite0 features of the 10 classes (60 training images each)."""
    probe = fit_probe(data_dir, lite0, images_per_class=60, cache_dir=feature_cache)
    m = probe.manifest
    assert (m["n_train"], m["n_val"], m["validation"]) == (600, 500, "val split")
    assert probe.val_accuracy >= 0.95, m
    folder = probe.save(tmp_path / "probe-x", cache_dir=feature_cache)
    backbone = load_backbone(f"probe:{folder}")
    assert isinstance(backbone, ProbeBackbone) and backbone.num_classes == 10
    assert backbone.class_names[:2] == ["tench", "English springer"] and backbone.wnids[0] == "n01440764"

    classes = ["tench", "church", "parachute"]  # a few classes keep the test short; exactness is per class
    run = run_decomposition(backbone, data_dir, classes=classes, images_per_class=60, k=3, cache_dir=feature_cache)
    assert run.classes.tolist() == [0, 4, 9] and run.manifest["backbone"] == f"probe:{folder.resolve()}"
    save_run(run, tmp_path / "run")
    reloaded = load_run(tmp_path / "run")
    again = reloaded.load_backbone()  # the run rebuilds the probed model from its manifest alone
    assert again.fingerprint == backbone.fingerprint
    figures = evaluate_run(reloaded, again, data_dir, "val", cache_dir=feature_cache)
    assert figures["max_abs_logit_diff"] <= 1e-4
    assert figures["top1_original"] == pytest.approx(probe.val_accuracy)
    assert figures["top1_prototype"] == figures["top1_original"]


def test_logistic_regression_folds_standardisation_into_the_head():
    torch.manual_seed(0)
    x = torch.randn(300, 5) * torch.tensor([1.0, 10.0, 0.1, 5.0, 1.0]) + 3
    y = (x[:, 0] + x[:, 2] * 10 > 3).long()
    head = fit_linear_head(x, y, 2, l2=1e-4)
    assert (head(x).argmax(dim=1) == y).float().mean() >= 0.97  # applies to raw features
    with pytest.raises(ValueError):
        fit_linear_head(x, y, 2, l2=-1)


def test_probe_round_trip_and_refusals(folder, r10_weights, tmp_path):
    probe = fit_probe(folder, "timm:resnet10t", weights=r10_weights, cache_dir=False)
    assert probe.manifest["classes"][0] == {"folder": "0", "name": "0", "n_train": 4}
    path = probe.save(tmp_path / "probe", cache_dir=False)
    backbone = load_backbone(f"probe:{path}")
    x = torch.randn(2, 3, 64, 64)
    feats, logits = backbone(x)
    torch.testing.assert_close(logits, feats.mean(dim=(1, 2)) @ backbone.head_weight.T + backbone.head_bias)

    with pytest.raises(BackboneError, match="do not pass --weights"):
        load_backbone(f"probe:{path}", weights=r10_weights)
    with pytest.raises(BackboneError, match="not a probe folder"):
        load_backbone(f"probe:{tmp_path}")
    with pytest.raises(FileExistsError):
        probe.save(path)
    with pytest.raises(ValueError, match="another probe"):
        fit_probe(folder, backbone, cache_dir=False)
    torch.manual_seed(1)  # the backbone's weights change under the probe: refused, not silently wrong
    save_file(load_backbone("timm:resnet10t", weights="random").model.state_dict(), r10_weights)
    with pytest.raises(BackboneError, match="fit the probe again"):
        load_backbone(f"probe:{path}")
    random_probe = fit_probe(folder, "timm:resnet10t", weights="random", cache_dir=False)
    with pytest.raises(BackboneError, match="random weights"):
        random_probe.save(tmp_path / "never")


def test_probe_holds_out_training_images_without_a_val_split(tmp_path, r10_weights):
    data = write_folder(tmp_path / "d", splits=(("train", 10),))
    probe = fit_probe(data, "timm:resnet10t", weights=r10_weights, cache_dir=False)
    assert probe.manifest["n_train"] == 24 and probe.manifest["n_val"] == 6
    assert "held out" in probe.manifest["validation"]
    one = write_folder(tmp_path / "one", names={"0": (0, 0, 0)})
    with pytest.raises(DataError, match="at least 2 class folders"):
        fit_probe(one, "timm:resnet10t", weights=r10_weights, cache_dir=False)
    with pytest.raises(DataError, match="does not exist"):
        fit_probe(tmp_path / "absent", "timm:resnet10t", weights=r10_weights, cache_dir=False)


@pytest.mark.slow
def test_vgg_only_through_a_probe(folder, tmp_path, monkeypatch):
    with pytest.raises(BackboneError, match=r"unknown backbone 'vgg16'.*probe"):
        load_backbone("vgg16")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsMissing, match=r"vgg16-397923af\.pth"):
        fit_probe(folder, "vgg16", cache_dir=False)

    torch.manual_seed(0)
    conv = make_layers(cfgs["D"])
    # as a whole torchvision checkpoint names it (its 120M-parameter MLP, cut short here, is dropped)
    state = {f"features.{k}": v for k, v in conv.state_dict().items()} | {"classifier.0.weight": torch.zeros(2, 2)}
    torch.save(state, tmp_path / "vgg16.pth")
    trunk = build_vgg("vgg16", str(tmp_path / "vgg16.pth"))
    torch.testing.assert_close(trunk.model[0].weight, conv[0].weight)
    cache = tmp_path / "cache"  # the probe seeds its own cache: decomposing and evaluating rerun no VGG
    probe = fit_probe(folder, "vgg16", weights=str(tmp_path / "vgg16.pth"), cache_dir=cache)
    assert probe.manifest["feature_dim"] == 512
    backbone = load_backbone(f"probe:{probe.save(tmp_path / 'probe', cache_dir=cache)}")
    feats, _ = backbone(torch.randn(1, 3, 224, 224))
    assert feats.shape == (1, 7, 7, 512) and feats.min() >= 0  # after VGG's last ReLU and max-pool
    run = run_decomposition(backbone, folder, k=2, cache_dir=cache)
    figures = evaluate_run(run, backbone, folder, "val", cache_dir=cache)
    assert figures["max_abs_logit_diff"] <= 1e-4 * max(1.0, backbone.head_weight.abs().max().item())


@pytest.mark.parametrize("name", ["resnet18", "timm:resnet10t"])
def test_fine_tuned_checkpoint_decomposes_with_its_own_head(name, folder, tmp_path):
    """A user's checkpoint with 3 classes loads with its 3-class head; folders named 0, 1, 2 map to them."""
    torch.manual_seed(0)
    if name == "resnet18":
        model = models.resnet18(num_classes=3)
    else:
        import timm

        model = timm.create_model("resnet10t", num_classes=3)
    torch.save(model.state_dict(), tmp_path / "fine-tuned.pt")
    backbone = load_backbone(name, weights=str(tmp_path / "fine-tuned.pt"))
    assert backbone.num_classes == 3 and backbone.class_names == ["class 0", "class 1", "class 2"]
    run = run_decomposition(backbone, folder, k=2, cache_dir=False)
    assert run.classes.tolist() == [0, 1, 2] and run.k == 2
    save_run(run, tmp_path / "run")
    reloaded = load_run(tmp_path / "run")
    assert_exact(reloaded, reloaded.load_backbone(), folder)


def test_command_line_probe_then_decompose(folder, r10_weights, tmp_path, capsys):
    out = tmp_path / "probe-x"
    assert (
        main(
            [
                "probe",
                "--data",
                str(folder),
                "--backbone",
                "timm:resnet10t",
                "--weights",
                r10_weights,
                "--out",
                str(out),
                "--device",
                "cpu",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "val accuracy" in printed and f"decompose --probe {out}" in printed
    assert json.loads((out / "probe.json").read_text())["n_val"] == 6
    assert (
        main(
            [
                "decompose",
                "--probe",
                str(out),
                "--data",
                str(folder),
                "--k",
                "2",
                "--out",
                str(tmp_path / "run"),
                "--device",
                "cpu",
                "--cache",
                str(tmp_path / "cache"),
            ]
        )
        == 0
    )
    assert load_run(tmp_path / "run").manifest["backbone"] == f"probe:{out.resolve()}"
    assert main(["probe", "--data", str(folder), "--out", str(out)]) == 2  # exists: a clear error, no traceback
    assert "already exists" in capsys.readouterr().err
