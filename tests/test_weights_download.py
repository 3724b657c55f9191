"""Pretrained weights fetched with consent, end to end: a local HTTP server stands in for the model hosts through
``$PROTOLIB_WEIGHTS_MIRROR``. It serves a real resnet18 state dict (seeded random init, calibrated on sample
photos); ``protoscope decompose --download`` fetches, checks and decomposes it exactly, and a corrupt or a
truncated file is refused with exit code 2, leaving nothing in the cache.

The expected checksum comes from where torchvision keeps it, the file's name (``resnet18-<sha256 prefix>.pth``).
The test's file is not torchvision's, so its registry entry is pointed at a name carrying *its* hash prefix:
the check that runs is the production one, on the name and the bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from protolib import cli
from protolib.backbones import load_backbone, torchvision_models
from protolib.backbones.download import DownloadRefused, fetch_weights, needs_download, weights_file
from protolib.data import load_image
from protolib.runs import load_run
from tests.weights_host import CLASSES, resnet18_file, serve


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir):
    """(base URL, file name, the model, the served folder): good/, corrupt/ and truncated/ copies of one file."""
    data, name, backbone = resnet18_file(data_dir)
    root = tmp_path_factory.mktemp("mirror")
    corrupt = bytearray(data)
    corrupt[len(data) // 2] ^= 0xFF
    for folder, content in (("good", data), ("corrupt", bytes(corrupt)), ("truncated", data[: len(data) // 2])):
        (root / folder).mkdir()
        (root / folder / name).write_bytes(content)
    server, base = serve(root)
    yield base, name, backbone, root
    server.shutdown()


@pytest.fixture
def mirror(served, monkeypatch, tmp_path):
    base, name = served[:2]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torchvision_models, "weights_url", lambda arch: f"https://download.pytorch.org/models/{name}")
    return base, tmp_path / "torch" / "hub" / "checkpoints" / name


def decompose(data_dir, tmp_path, *extra) -> int:
    return cli.main(
        [
            "decompose",
            "--backbone",
            "resnet18",
            "--data",
            str(data_dir),
            "--classes",
            *CLASSES,
            "--images-per-class",
            "4",
            "--k",
            "2",
            "--device",
            "cpu",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "run"),
            *extra,
        ]
    )


def test_offline_message_names_the_file_the_host_and_the_place(mirror, monkeypatch, data_dir, tmp_path, capsys):
    base, dest = mirror
    assert decompose(data_dir, tmp_path) == 2
    message = capsys.readouterr().err
    assert f"https://download.pytorch.org/models/{dest.name}" in message and str(dest) in message and "--download" in message
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", base + "/good/")
    assert decompose(data_dir, tmp_path) == 2  # still no download without consent
    assert f"{base}/good/{dest.name}" in capsys.readouterr().err and not dest.exists()


def test_download_checks_and_decomposes_exactly(served, mirror, monkeypatch, data_dir, tmp_path, capsys):
    base, dest = mirror
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", base + "/good")
    assert needs_download("resnet18") and weights_file("resnet18").url == f"{base}/good/{dest.name}"
    assert decompose(data_dir, tmp_path, "--download") == 0, capsys.readouterr().err
    assert dest.is_file() and not needs_download("resnet18")
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]  # no temporary file left beside it

    backbone = load_backbone("resnet18")
    assert backbone.fingerprint == served[2].fingerprint
    run = load_run(tmp_path / "run")
    paths = [Path(p) for folder in run.manifest["images"].values() for p in folder]
    transform = backbone.preprocessing.transform()
    x = torch.stack([transform(load_image(p)) for p in paths])
    feats, _ = backbone(x)
    logits, _ = run.head(backbone)(feats)
    with torch.inference_mode():
        reference = backbone.model(x)
    assert float(reference[:, run.head(backbone).classes].std()) > 0.1  # the logits are not degenerate
    assert float((logits - reference).abs().max()) <= 1e-4 * max(1.0, float(reference.abs().max()))


@pytest.mark.parametrize("kind", ["corrupt", "truncated"])
def test_a_bad_file_is_refused_and_nothing_is_kept(kind, mirror, monkeypatch, data_dir, tmp_path, capsys):
    base, dest = mirror
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", f"{base}/{kind}")
    assert decompose(data_dir, tmp_path, "--download") == 2
    message = capsys.readouterr().err
    assert "sha256" in message and "nothing was kept" in message and "Traceback" not in message
    assert not dest.exists() and list(dest.parent.iterdir()) == [] and not (tmp_path / "run").exists()


def test_an_unreachable_host_is_a_clear_refusal(mirror, monkeypatch):
    base, dest = mirror
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", f"{base}/absent")
    with pytest.raises(DownloadRefused, match="HTTP 404"):
        fetch_weights("resnet18")
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_bad_mirror_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", "ftp://example.org/models")
    with pytest.raises(ValueError, match=r"\$PROTOLIB_WEIGHTS_MIRROR must be an http"):
        fetch_weights("resnet18")


def test_timm_weights_from_a_mirror_land_in_the_hub_cache(served, monkeypatch, tmp_path):
    """timm: the mirror serves ``<repo>/<file>`` and its ``.sha256`` sidecar; a wrong sidecar is refused."""
    from huggingface_hub import constants
    from safetensors.torch import save_file

    from protolib.backbones.timm_models import hub_weights

    base, served_root = served[0], served[3]
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    torch.manual_seed(1)
    model = load_backbone("timm:resnet10t", weights="random")
    repo, filename = hub_weights("resnet10t")
    target = served_root / "good" / repo / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.model.state_dict().items()}, str(target))
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", f"{base}/good")
    with pytest.raises(DownloadRefused, match="no checksum"):
        fetch_weights("timm:resnet10t")
    (target.parent / (filename + ".sha256")).write_text("0" * 64 + "  " + filename + "\n")
    with pytest.raises(DownloadRefused, match="sha256"):
        fetch_weights("timm:resnet10t")
    assert not any(p.is_file() for p in (tmp_path / "hf").rglob("*"))
    (target.parent / (filename + ".sha256")).write_text(hashlib.sha256(target.read_bytes()).hexdigest())
    assert needs_download("timm:resnet10t")
    path = fetch_weights("timm:resnet10t")
    assert path.is_file() and not needs_download("timm:resnet10t")
    assert load_backbone("timm:resnet10t").fingerprint == model.fingerprint


def test_missing_timm_weights_say_what_to_fetch_and_where(monkeypatch, tmp_path):
    """Offline and without consent: the file, its host (or the mirror) and the cache folder; nothing goes online,
    and no process-wide setting (HF_HUB_OFFLINE) is changed to achieve that."""
    from huggingface_hub import constants

    from protolib.backbones import WeightsMissing
    from protolib.backbones.timm_models import hub_weights

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo, filename = hub_weights("resnet10t")
    with pytest.raises(WeightsMissing) as error:
        load_backbone("timm:resnet10t")
    message = str(error.value)
    assert f"https://huggingface.co/{repo}/resolve/main/{filename}" in message
    assert str(tmp_path / "hf" / f"models--{repo.replace('/', '--')}") in message and "--download" in message
    assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("PROTOLIB_WEIGHTS_MIRROR", "https://models.example.org/ml")
    with pytest.raises(WeightsMissing, match=f"https://models.example.org/ml/{repo}/{filename}"):
        load_backbone("timm:resnet10t")


def test_every_listed_model_can_be_fetched_with_a_check(monkeypatch, tmp_path):
    """Every torchvision model of the menu has a file with a sha256 prefix in its name and a size for the button;
    the embedded models have nothing to fetch; a timm model points at its hub file."""
    from protolib.backbones import available_backbones

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for spec in available_backbones():
        if spec.embedded:
            assert not needs_download(spec.name)
            continue
        source = weights_file(spec.name)
        assert source.sha256_prefix and len(source.sha256_prefix) >= 8 and source.size_mb > 1, spec.name
        assert source.dest.parent == tmp_path / "hub" / "checkpoints" and needs_download(spec.name)
    assert weights_file("timm:resnet50").url.startswith("https://huggingface.co/timm/resnet50")
    assert not needs_download("probe:runs/p") and not needs_download("parts_net:model.safetensors")
