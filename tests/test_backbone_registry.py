"""The backbone registry: each family registers itself where it is defined, a name's prefix is read in one
place (``registry.split_name``), and every builder records its weights' source when it constructs the backbone."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from protolib.backbones import BackboneError, available_backbones, load_backbone
from protolib.backbones.download import needs_download
from protolib.backbones.parts_net import PartsNet, save_parts_net
from protolib.backbones.probe_models import build_vgg
from protolib.backbones.registry import DEFAULT_BACKBONE, register_backbone, register_prefix, split_name
from protolib.backbones.timm_models import LITE_FAMILY, build_timm
from protolib.backbones.torchvision_models import SPECS

pytestmark = pytest.mark.usefixtures("no_network", "one_thread")


def test_a_name_is_split_by_its_registered_prefix():
    assert split_name("timm:resnet10t") == ("timm:", "resnet10t")
    assert split_name("probe:/runs/a:b") == ("probe:", "/runs/a:b")  # only the first ':' splits
    assert split_name("parts_net:net.safetensors") == ("parts_net:", "net.safetensors")
    assert split_name("resnet18") == ("", "resnet18")
    assert split_name("foo:bar") == ("", "foo:bar")  # not a registered prefix: an (unknown) name as a whole


def test_the_menu_is_what_the_families_registered_the_embedded_default_first():
    names = [spec.name for spec in available_backbones()]
    assert names == [*LITE_FAMILY, *(name for name, _, _ in SPECS)]
    assert names[0] == DEFAULT_BACKBONE and all(spec.embedded for spec in available_backbones()[: len(LITE_FAMILY)])
    assert {spec.build.func.__module__ for spec in available_backbones()} == {  # each registered by its own family
        "protolib.backbones.timm_models",
        "protolib.backbones.torchvision_models",
    }


def test_a_name_or_prefix_is_registered_once():
    with pytest.raises(ValueError, match="taken"):
        register_backbone("resnet18", "again", locate=lambda: None, hint=lambda: "")(lambda weights: None)
    with pytest.raises(ValueError, match="':'"):
        register_backbone("my:model", "a colon", locate=lambda: None, hint=lambda: "")(lambda weights: None)
    for prefix in ("timm:", "timm", "a:b:"):
        with pytest.raises(ValueError, match="prefix"):
            register_prefix(prefix)(lambda rest, weights: None)
    assert split_name("timm:resnet10t") == ("timm:", "resnet10t") and "a" not in {s.name for s in available_backbones()}


def test_an_unknown_name_lists_the_menu_and_the_timm_prefix():
    for name in ("foo:bar", "resnet"):
        listing = rf"unknown backbone '{name}'; choose one of efficientnet_lite0, .* or timm:<model name>$"
        with pytest.raises(BackboneError, match=listing):
            load_backbone(name, weights="random")
    # nothing to download for a name that no host's file can be behind
    assert not any(needs_download(name) for name in ("foo:bar", "timm:a:b", "probe:/nowhere", "parts_net:/nowhere"))


def test_weights_source_is_recorded_when_the_backbone_is_built(tmp_path, monkeypatch):
    """The builders themselves record it (not the loader afterwards): a file as its absolute path."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    assert build_timm("resnet10t", "random").weights_source == "random"
    save_file(load_backbone("timm:resnet10t", weights="random").model.state_dict(), "r10.safetensors")
    assert build_timm("resnet10t", "r10.safetensors").weights_source == str(tmp_path / "r10.safetensors")
    assert load_backbone("timm:resnet10t", weights="r10.safetensors").weights_source == str(tmp_path / "r10.safetensors")
    assert load_backbone("resnet18", weights="random").weights_source == "random"
    assert load_backbone(LITE_FAMILY["efficientnet_lite1"].arch, weights="random").weights_source == "random"
    assert build_vgg("vgg16", "random").weights_source == "random"


def test_a_saved_parts_net_is_its_own_weights(tmp_path):
    path = save_parts_net(PartsNet(2, width=4, feature_dim=8), tmp_path / "net.safetensors", ["a", "b"], size=32)
    backbone = load_backbone(f"parts_net:{path}")
    assert backbone.name == f"parts_net:{path.resolve()}" and backbone.weights_source is None and backbone.class_names == ["a", "b"]
    with pytest.raises(BackboneError, match="its own weights file; do not pass --weights"):
        load_backbone(f"parts_net:{path}", weights="random")
