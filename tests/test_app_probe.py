"""A zipped image folder uploaded in the app, a linear probe fit on it there, and the probed model
decomposed (AppTest, with real photos and the real EfficientNet-Lite0); probes from the command line.

The class folders are named "fish" and "dog": classes the ImageNet model does not know by those
names, so only a probe makes them decomposable.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from pages.common.run_views import probe_rows
from protolib.backbones import load_backbone
from protolib.backbones.probe_models import read_probe_manifest
from protolib.cli import main
from protolib.probe import fit_probe
from protolib.runs import load_run
from protolib.runs.listing import list_runs
from protolib.runs.names import short_backbone
from tests.apptest import DATA, button, classes_widget, start, texts

pytestmark = pytest.mark.usefixtures("navigation_mode")  # the app as AppTest runs it, in navigation mode

FOLDERS = {"fish": "n01440764", "dog": "n02102040"}  # tench, English springer photos


def pets(splits=(("train", 4), ("val", 2))) -> dict[str, bytes]:
    """``pets/<split>/<fish|dog>/<photo>`` from the sample photos."""
    members = {}
    for split, n in splits:
        for folder, wnid in FOLDERS.items():
            for path in sorted((DATA / split / wnid).iterdir())[:n]:
                members[f"pets/{split}/{folder}/{path.name}"] = path.read_bytes()
    return members


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Empty runs folder, feature cache and uploads folder; the temporary folders allowed as data folders;
    one thread (tiny batches)."""
    if not (DATA / "train").is_dir():
        pytest.skip(f"the sample photos are not at {DATA}")
    root = tmp_path_factory.mktemp("app-probe")
    patch = pytest.MonkeyPatch()
    patch.setenv("PROTOLIB_RUNS", str(root / "runs"))
    patch.setenv("PROTOLIB_CACHE", str(root / "cache"))
    patch.setenv("PROTOLIB_UPLOADS", str(root / "uploads"))  # the sessions' upload folders
    patch.setenv("PROTOLIB_DATA_ROOTS", str(tmp_path_factory.getbasetemp()))  # tests' own data folders
    patch.delenv("PROTOLIB_DATA", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield root
    torch.set_num_threads(threads)
    patch.undo()


def upload_zip(at, name: str, data: bytes):
    at.segmented_control(key="w.dec_source").set_value("Zip of a dataset").run()
    at.file_uploader[0].set_value((name, data, "application/zip")).run()
    button(at, "Extract and use this folder").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_zip_upload_probe_and_decompose_in_the_app(env):
    members = pets() | {"pets/readme.txt": b"fish and dogs", "pets/train/dog/broken.jpg": b"not a photo"}
    at = upload_zip(start(run=None), "pets.zip", zipped(members))
    # the extracted folder is now the data folder, shown in the sidebar
    data = at.session_state["data_dir"]
    assert at.sidebar.text_input(key="w.data_dir").value == data and data.endswith("/pets")
    workspace = at.session_state["workspace"]
    assert Path(data).parent == workspace.datasets and workspace.datasets.is_relative_to(env / "uploads")
    assert workspace.session not in data  # the session id names no folder a page shows
    assert at.session_state["dec_source"] == "Data folder"
    assert "Extracted “pets.zip”: train/: 8 images in 2 classes, val/: 4 images in 2 classes." in texts(at, "success")
    skipped = at.dataframe[0].value["file or folder"].tolist()
    assert skipped == ["pets/readme.txt", "pets/train/dog/broken.jpg"]
    # fish/ and dog/ are not ImageNet classes by name: the page says so and offers the probe
    assert "No usable images" in texts(at, "error") and "fit a linear probe" in texts(at, "info")
    assert button(at, "Run decomposition").disabled

    assert at.selectbox(key="w.probe_trunk").value == "efficientnet_lite0"
    at.number_input(key="w.probe_per_class").set_value(4).run()
    assert at.text_input(key="w.probe_name").value == "probe-efficientnet_lite0-pets"
    button(at, "Fit probe").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, texts(at, "error")
    folder = workspace.private_runs / "probe-efficientnet_lite0-pets"  # the session's own probe
    manifest = read_probe_manifest(folder)
    assert (manifest["n_train"], manifest["n_val"], manifest["validation"]) == (8, 4, "val split")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Validation accuracy"] == f"{100 * manifest['val_accuracy']:.1f} %" == "100.0 %"
    assert metrics["Images (train + held out)"] == "8 + 4"
    # the probe is now the backbone, listed in the sidebar, and the folder's classes can be decomposed
    assert at.session_state["backbone"] == f"probe:{folder}"
    sidebar = at.sidebar.selectbox(key="w.backbone")
    assert sidebar.value == f"probe:{folder}"
    described = "Probe “probe-efficientnet_lite0-pets”: efficientnet_lite0 + linear head, 2 classes, val accuracy 100 %"
    assert sidebar.options[-1] == described
    assert classes_widget(at).options == ["dog · 4 images", "fish · 4 images"]
    at.slider(key="w.dec_k").set_value(2).run()
    assert at.text_input(key="w.dec_name").value == "probe-efficientnet_lite0-pets-2cls-k2-optimized"
    button(at, "Run decomposition").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run = load_run(workspace.private_runs / "probe-efficientnet_lite0-pets-2cls-k2-optimized")
    assert run.manifest["backbone"] == f"probe:{folder}" and run.class_names == ["dog", "fish"]
    at.switch_page("pages/prototypes.py").run()
    assert not at.exception and not at.error, texts(at, "error")
    assert "dog" in at.subheader[0].value


def test_bad_zips_are_refused_with_a_message(env):
    at = start(run=None)
    before = at.session_state["data_dir"]
    upload_zip(at, "photos.zip", b"PK\x03\x04 not a zip at all")
    assert "“photos.zip” cannot be used: the file is not a zip archive, or it is damaged" in texts(at, "error")
    evil = zipped(pets((("train", 1),)) | {"../../evil.png": b"x"})
    at.file_uploader[0].set_value(("evil.zip", evil, "application/zip")).run()
    button(at, "Extract and use this folder").click().run()
    assert "points outside the archive" in texts(at, "error")
    assert at.session_state["data_dir"] == before
    assert not any((env / "uploads").rglob("*.png"))  # nothing of either was written


def test_sessions_extract_into_their_own_folders_and_can_remove_them(env):
    data = zipped(pets((("train", 3),)))
    a, b = upload_zip(start(run=None), "pets.zip", data), upload_zip(start(run=None), "pets.zip", data)
    folder_a, folder_b = a.session_state["data_dir"], b.session_state["data_dir"]
    assert folder_a != folder_b and a.session_state["workspace"].session != b.session_state["workspace"].session
    a.segmented_control(key="w.dec_source").set_value("Zip of a dataset").run()
    button(a, "Remove all uploaded datasets").click().run()
    assert not Path(folder_a).exists() and Path(folder_b).is_dir()
    assert a.session_state["data_dir"] == str(DATA)  # back to the default folder


@pytest.fixture(scope="module")
def saved_probe(env, tmp_path_factory):
    """A probe of EfficientNet-Lite0 on fish/dog photos, saved in the app's runs folder."""
    data = tmp_path_factory.mktemp("pets-data")
    with zipfile.ZipFile(io.BytesIO(zipped(pets()))) as archive:
        archive.extractall(data)
    probe = fit_probe(data / "pets", load_backbone(), images_per_class=4)
    return probe.save(env / "runs" / "probe-pets"), data / "pets"


def test_the_sidebar_offers_probes_of_the_runs_folder(env, saved_probe):
    folder, data = saved_probe
    at = start(run=None)
    backbone = at.sidebar.selectbox(key="w.backbone")
    assert any(o.startswith("Probe “probe-pets”: efficientnet_lite0 + linear head, 2 classes") for o in backbone.options)
    backbone.set_value(f"probe:{folder}").run()
    assert at.session_state["backbone"] == f"probe:{folder}"
    at.sidebar.text_input(key="w.data_dir").set_value(str(data)).run()
    assert not at.exception and not at.error, texts(at, "error")
    assert classes_widget(at).options == ["dog · 4 images", "fish · 4 images"]
    row = next(r for r in probe_rows(env / "runs") if r["probe"] == "probe-pets")
    assert (row["backbone"], row["classes"], row["training images"], row["val accuracy"]) == ("efficientnet_lite0", 2, 8, 1.0)
    assert "probe-pets" not in [p.name for p in list_runs(env / "runs")]  # a probe is a backbone, not a run
    assert short_backbone(f"probe:{folder}") == "probe-pets"
    assert short_backbone("probe:/x/mine") == "probe-mine" and short_backbone("resnet18") == "resnet18"


def test_command_line_decompose_run_takes_a_probe_folder(env, saved_probe, tmp_path, capsys):
    folder, data = saved_probe
    common = ["--k", "2", "--device", "cpu", "--cache", str(env / "cache")]
    # the spelling; without --data, the probe's own images
    assert main(["decompose", "--probe", str(folder), "--out", str(tmp_path / "run"), *common]) == 0
    run = load_run(tmp_path / "run")
    assert run.manifest["backbone"] == f"probe:{folder.resolve()}" and run.class_names == ["dog", "fish"]
    assert main(["decompose", "--probe", str(folder), "--data", str(data), "--out", str(tmp_path / "run2"), *common]) == 0
    capsys.readouterr()
    assert main(["decompose", "--probe", str(tmp_path / "run"), "--out", str(tmp_path / "run3"), *common]) == 2
    assert "is a decomposition run, not a probe" in capsys.readouterr().err
    assert main(["decompose", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "run4"), *common]) == 2
    assert "absent does not exist" in capsys.readouterr().err
