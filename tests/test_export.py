"""A run leaves the app: ``protolib.export.load_model`` gives a plain ``torch.nn.Module`` (backbone + prototype
head + preprocessing), and ``export_torchscript`` a TorchScript file that reproduces an edited run's logits on
real photos when loaded with ``torch.jit.load`` alone (checked in a Python process that never imports protolib).

One small real run: EfficientNet-Lite0, 2 classes x 6 photos of the sample, k = 3; its edit switches P1 of
the first class off.
"""

from __future__ import annotations

import json
import subprocess
import sys

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
def edited(tmp_path_factory, lite0):
    """(the edited run's folder, the run itself): P1 of tench off, P2 of tench named "fins", saved as a run."""
    from protolib import run_decomposition
    from protolib.runs import save_run

    tmp = tmp_path_factory.mktemp("export")
    run = run_decomposition(lite0, SAMPLE_DATA, classes=CLASSES, images_per_class=6, k=3, cache_dir=tmp / "cache")
    scale = torch.ones(len(run.classes), run.k)
    scale[0, 0] = 0
    edited = run.with_scale(scale, "tench: P1 off").with_prototype_names({int(run.classes[0]): {1: "fins"}})
    path = save_run(edited, tmp / "edited")
    return path, edited


@pytest.fixture(scope="module")
def photos(lite0):
    """Real held-out photos of both classes, preprocessed as the model expects: (6, 3, 224, 224)."""
    transform = lite0.preprocessing.transform()
    paths = [p for folder in CLASSES for p in image_files(SAMPLE_DATA / "val" / folder)[:PHOTOS]]
    return torch.stack([transform(load_image(p)) for p in paths])


def reference_logits(run, backbone, photos: torch.Tensor) -> torch.Tensor:
    """The edited run's logits as the app computes them: backbone features, then the run's prototype head."""
    features, _ = backbone(photos)
    return run.head(backbone)(features)[0]


def test_load_model_is_a_plain_module_with_the_runs_logits(edited, lite0, photos):
    from protolib.export import PrototypeModel, load_model

    path, run = edited
    model = load_model(path)
    assert isinstance(model, torch.nn.Module) and isinstance(model, PrototypeModel)
    with torch.no_grad():
        logits = model(photos)
        contributions = model.contributions(photos)
    expected = reference_logits(run, lite0, photos)
    assert logits.shape == (len(photos), 1000)
    assert (logits - expected).abs().max() < 1e-4
    tench = model.decomposed.index(int(run.classes[0]))
    label = model.decomposed[tench]
    assert contributions.shape == (len(photos), 2, 3)
    assert float(contributions[:, tench, 0].abs().max()) == 0  # switched off
    sums = contributions.sum(dim=-1) + model.head.bias[model.decomposed]
    assert (sums - logits[:, model.decomposed]).abs().max() < 1e-4
    # the edit is in the logits: the unedited model's tench logit is P1's contribution higher
    _, original = lite0(photos)
    assert float((original[:, label] - logits[:, label]).abs().max()) > 1e-3
    assert model.class_names == lite0.class_names and model.class_names[label] == "tench"
    assert model.prototype_names == {"tench": ["", "fins", ""], "English springer": ["", "", ""]}
    one = model.preprocess(load_image(image_files(SAMPLE_DATA / "val" / CLASSES[0])[0]))
    assert torch.equal(one, photos[0])


@pytest.mark.slow  # tracing or exporting the real model
def test_the_exported_torchscript_reproduces_the_edited_run_without_protolib(edited, lite0, photos, tmp_path):
    from protolib.export import export_torchscript, read_exported

    path, run = edited
    out = export_torchscript(path, tmp_path / "model.pt")
    expected = reference_logits(run, lite0, photos)
    module, meta = read_exported(out)
    with torch.no_grad():
        assert (module(photos) - expected).abs().max() < 1e-4
        assert module.contributions(photos[:1]).shape == (1, 2, 3)  # another batch size than the trace's
    assert meta["prototype_names"]["tench"] == ["", "fins", ""] and meta["intervention"] == "tench: P1 off"
    assert meta["preprocessing"]["crop_size"] == 224 and len(meta["class_names"]) == 1000

    # a fresh Python that imports torch only: torch.jit.load and the file's own metadata are enough
    torch.save(photos, tmp_path / "photos.pt")
    script = f"""
import json, sys, torch
files = {{"protoscope.json": ""}}
model = torch.jit.load({str(out)!r}, _extra_files=files)
meta = json.loads(files["protoscope.json"])
with torch.no_grad():
    logits = model(torch.load({str(tmp_path / "photos.pt")!r}, weights_only=True))
torch.save(logits, {str(tmp_path / "logits.pt")!r})
print(json.dumps({{"protolib": any(m.startswith("protolib") for m in sys.modules), "k": meta["k"],
                  "top": meta["class_names"][int(logits[0].argmax())]}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["protolib"] is False and answer["k"] == 3
    outside = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert (outside - expected).abs().max() < 1e-4
    assert answer["top"] == lite0.class_names[int(expected[0].argmax())]


@pytest.mark.slow  # tracing or exporting the real model
def test_the_torch_export_program_reproduces_the_edited_run(edited, lite0, photos, tmp_path):
    from protolib.export import METADATA, export_model

    path, run = edited
    out = export_model(path, tmp_path / "model.pt2")
    files = {METADATA: ""}
    program = torch.export.load(str(out), extra_files=files)
    with torch.no_grad():
        logits = program.module()(photos[:5])  # another batch size than the export's example
    assert (logits - reference_logits(run, lite0, photos[:5])).abs().max() < 1e-4
    assert json.loads(files[METADATA])["prototype_names"]["tench"][1] == "fins"


def test_cli_export(edited, tmp_path, capsys):
    from protolib.cli import main

    path, _ = edited
    assert main(["export", "--run", str(path), "--out", str(tmp_path / "cli.pt")]) == 0
    assert (tmp_path / "cli.pt").is_file() and "cli.pt" in capsys.readouterr().out
    assert main(["export", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.pt")]) == 2
    assert not (tmp_path / "x.pt").exists()
