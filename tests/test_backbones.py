"""Backbone adapters: exactness against the real models, weights handling, refusals. CPU, no network."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torchvision import models

from protolib.backbones import (
    BackboneError,
    UnsupportedModel,
    WeightsMissing,
    available_backbones,
    load_backbone,
)
from protolib.backbones.torchvision_models import SPECS
from tests.helpers import make_nontrivial

TORCHVISION = [name for name, _, _ in SPECS]
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny inputs gain nothing from threads, and on a shared machine OpenMP threads waiting for a busy
    core made these tests 5-20x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_registry_names():
    expected = "resnet18 resnet34 resnet50 resnet101 resnet152 densenet121 densenet161 efficientnet_b0 efficientnet_b1"
    expected += " efficientnet_b2 efficientnet_b3 vit_b_16 vit_b_32"
    assert TORCHVISION == expected.split()
    assert all(spec.description for spec in available_backbones())


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_exact(name):
    torch.manual_seed(0)
    backbone = load_backbone(name, weights="random")
    vit = name.startswith("vit")
    x = torch.randn(2, 3, 224, 224) if vit else torch.randn(2, 3, 64, 64)  # CNNs take any size; small is fast
    make_nontrivial(backbone, x)
    feats, logits = backbone(x)
    B, H, W, D = feats.shape
    assert (B, D) == (2, backbone.head.in_features) and H == W > 1
    assert logits.shape == (2, 1000) and logits.std() > 0.1
    scale = max(1.0, logits.abs().max().item())
    linear = feats.mean((1, 2)) @ backbone.head_weight.T + backbone.head_bias
    assert (linear - logits).abs().max().item() <= 1e-4 * scale
    assert len(backbone.class_names) == 1000 and backbone.wnids[0] == "n01440764"
    if vit:
        assert backbone.note and "\n" not in backbone.note
    else:
        assert not backbone.note
        with torch.inference_mode():
            reference = backbone.model(x)
        assert (reference - logits).abs().max().item() <= 1e-5 * scale


def test_vit_patch_tokens_are_the_encoder_output():
    """The spatial map is the encoder's output (after its LayerNorm) without the class token, in image order."""
    torch.manual_seed(0)
    backbone = load_backbone("vit_b_32", weights="random")
    x = torch.randn(1, 3, 224, 224)
    feats, _ = backbone(x)
    tokens = []
    backbone.model.encoder.register_forward_hook(lambda module, args, out: tokens.append(out))
    with torch.inference_mode():
        backbone.model(x)
    torch.testing.assert_close(feats.reshape(1, 49, 768), tokens[0][:, 1:])


def test_default_lite0():
    torch.manual_seed(0)
    backbone = load_backbone()
    x = torch.randn(2, 3, 224, 224)
    _, logits = backbone(x)
    with torch.inference_mode():
        torch.testing.assert_close(logits, backbone.model(x), rtol=0, atol=1e-5)
    assert load_backbone().fingerprint == backbone.fingerprint
    assert load_backbone(weights="random").fingerprint != backbone.fingerprint


def test_missing_pretrained_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsMissing) as error:
        load_backbone("resnet18")
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message and "--weights" in message


def test_pretrained_from_hub_cache(monkeypatch, tmp_path):
    """A file in the hub cache is used; DenseNet's published files have legacy key names."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    resnet = load_backbone("resnet18", weights="random")
    torch.save(resnet.model.state_dict(), checkpoints / "resnet18-f37072fd.pth")
    assert load_backbone("resnet18").fingerprint == resnet.fingerprint

    densenet = load_backbone("densenet121", weights="random")
    # as published: 'norm.1'-style keys and no BatchNorm counters (they predate PyTorch 0.4.1)
    legacy = {
        k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
        for k, v in densenet.model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert legacy.keys() != densenet.model.state_dict().keys()
    torch.save(legacy, checkpoints / "densenet121-a639ec97.pth")
    assert load_backbone("densenet121").fingerprint == densenet.fingerprint


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_user_checkpoint_roundtrip(tmp_path, suffix):
    torch.manual_seed(0)
    original = load_backbone("resnet18", weights="random")
    path = tmp_path / f"resnet18{suffix}"
    state = original.model.state_dict()
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    loaded = load_backbone("resnet18", weights=str(path))
    assert loaded.fingerprint == original.fingerprint
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x)[1], original(x)[1], rtol=0, atol=0)


def test_user_checkpoint_errors(tmp_path):
    state = models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)
    torch.save(state, tmp_path / "wrong_shape.pt")
    with pytest.raises(BackboneError, match=r"shape mismatch: conv1\.weight \(64, 3, 5, 5\) != \(64, 3, 7, 7\)"):
        load_backbone("resnet18", weights=str(tmp_path / "wrong_shape.pt"))

    torch.save(models.resnet34().state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(BackboneError, match="unexpected"):
        load_backbone("resnet18", weights=str(tmp_path / "resnet34.pt"))

    for name in ("corrupt.pt", "corrupt.safetensors"):
        (tmp_path / name).write_bytes(b"this is not a checkpoint")
        with pytest.raises(BackboneError, match="not a weights file"):
            load_backbone("resnet18", weights=str(tmp_path / name))

    with pytest.raises(WeightsMissing):
        load_backbone("resnet18", weights=str(tmp_path / "absent.pt"))


def test_fine_tuned_checkpoint_keeps_its_classes(tmp_path):
    torch.save(models.resnet18(num_classes=10).state_dict(), tmp_path / "ten.pt")
    backbone = load_backbone("resnet18", weights=str(tmp_path / "ten.pt"))
    assert backbone.num_classes == 10 and backbone.class_names == [f"class {i}" for i in range(10)]
    assert backbone.wnids is None
    assert backbone(torch.randn(1, 3, 64, 64))[1].shape == (1, 10)


def test_unknown_and_unsupported_models():
    with pytest.raises(BackboneError, match="unknown backbone 'vgg16'"):
        load_backbone("vgg16")
    # ConvNeXt: LayerNorm after pooling; MobileNetV3: a conv + activation between pooling and the classifier.
    for arch in ("convnext_atto", "mobilenetv3_small_050"):
        with pytest.raises(UnsupportedModel):
            load_backbone(f"timm:{arch}", weights="random")
    with pytest.raises(BackboneError, match="no model named"):
        load_backbone("timm:no_such_model", weights="random")


def test_timm_linear_head_accepted():
    torch.manual_seed(0)
    backbone = load_backbone("timm:resnet10t", weights="random")
    x = torch.randn(2, 3, 96, 96)
    feats, logits = backbone(x)
    assert feats.shape[-1] == backbone.head.in_features
    with torch.inference_mode():
        torch.testing.assert_close(logits, backbone.model(x), rtol=0, atol=1e-5)
