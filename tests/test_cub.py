"""CUB-200-2011 reader on a tiny fixture in the native layout: split, crops, keypoints through every
transform, export for the pipeline, ProtoEval of a run, and clear errors for broken folders."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from protolib.backbones import load_backbone
from protolib.cli import main
from protolib.data import DataError
from protolib.data.cub import crop_box, export_image_folder, load_example, map_keypoints, read_cub
from protolib.evaluation.part_scores import cub_protoeval
from protolib.pipeline import run_decomposition
from protolib.probe import fit_probe
from protolib.runs import save_run

pytestmark = pytest.mark.usefixtures("one_thread")

PARTS = ["back", "beak", "left eye"]  # a name with a space, as CUB has
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
BACKGROUND = (128, 128, 128)
FOLDERS = ["001.Tiny_Albatross", "002.Tiny_Wren"]
# id, class (1-based), train?, image size (w, h), bbox (x, y, w, h), keypoints (x, y) per part or None (not visible)
IMAGES = [
    (1, 1, 1, (120, 90), (20.0, 10.0, 80.0, 60.0), [(30, 20), (90, 60), None]),
    (2, 1, 1, (100, 100), (0.0, 0.0, 100.0, 100.0), [(10, 80), (50, 50), (85, 15)]),
    (3, 1, 0, (90, 120), (15.0, 25.0, 60.0, 80.0), [(25, 40), (60, 95), (40, 70)]),
    (4, 2, 1, (110, 80), (5.0, 5.0, 100.0, 70.0), [(20, 20), (80, 60), (50, 40)]),
    (5, 2, 0, (80, 80), (10.0, 10.0, 60.0, 60.0), [(20, 60), (60, 20), (40, 40)]),
    (6, 2, 0, (100, 90), (30.0, 20.0, 60.0, 60.0), [(40, 30), (80, 70), (60, 50)]),
]
MARK = 6  # half size of the coloured square drawn at each keypoint


def write_cub(root):
    """A CUB_200_2011 folder: images with a coloured square centred on each visible keypoint."""
    (root / "parts").mkdir(parents=True)
    lines = {name: [] for name in ("images", "labels", "split", "boxes", "locs")}
    for image_id, label, train, (w, h), box, keypoints in IMAGES:
        rel = f"{FOLDERS[label - 1]}/{FOLDERS[label - 1].split('.')[1]}_{image_id:04d}.jpg"
        pixels = np.full((h, w, 3), BACKGROUND, np.uint8)
        for part, point in enumerate(keypoints):
            if point is not None:
                x, y = point
                pixels[max(0, y - MARK) : y + MARK + 1, max(0, x - MARK) : x + MARK + 1] = COLOURS[part]
            x, y = point or (0, 0)  # CUB writes 0 0 for a part that is not visible
            lines["locs"].append(f"{image_id} {part + 1} {x:.1f} {y:.1f} {int(point is not None)}")
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / rel, quality=100, subsampling=0)
        lines["images"].append(f"{image_id} {rel}")
        lines["labels"].append(f"{image_id} {label}")
        lines["split"].append(f"{image_id} {train}")
        lines["boxes"].append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
    files = {
        "images.txt": "images",
        "image_class_labels.txt": "labels",
        "train_test_split.txt": "split",
        "bounding_boxes.txt": "boxes",
        "parts/part_locs.txt": "locs",
    }
    for name, key in files.items():
        (root / name).write_text("\n".join(lines[key]) + "\n")
    (root / "parts/parts.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(PARTS)))
    return root


@pytest.fixture
def cub_root(tmp_path):
    return write_cub(tmp_path / "CUB_200_2011")


def nearest_colour(pixel) -> int:
    """Index of the marker colour a pixel shows (-1: background)."""
    palette = np.array([BACKGROUND, *COLOURS], float)
    return int(np.linalg.norm(palette - np.asarray(pixel, float), axis=1).argmin()) - 1


def test_reader_split_labels_and_keypoints(cub_root):
    cub = read_cub(cub_root)
    assert cub.class_folders == FOLDERS and cub.class_names == ["Tiny Albatross", "Tiny Wren"]
    assert cub.part_names == PARTS
    assert [i.id for i in cub.split(train=True)] == [1, 2, 4] and [i.id for i in cub.split(train=False)] == [3, 5, 6]
    first = cub.images[0]
    assert first.label == 0 and first.bbox == (20.0, 10.0, 80.0, 60.0) and first.path.is_file()
    assert first.visible.tolist() == [True, True, False]
    np.testing.assert_array_equal(first.keypoints[:2], [[30, 20], [90, 60]])
    assert np.isnan(first.keypoints[2]).all()  # not visible: no location


@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("size", [None, 48, 224])
def test_keypoints_land_on_their_marks(cub_root, crop, size):
    """After crop and resize (down and up), each visible keypoint's pixel shows its part's colour."""
    for image in read_cub(cub_root).images:
        picture, keypoints = load_example(image, size, crop)
        if size:
            assert picture.size == (size, size)
        pixels = np.asarray(picture)
        for part in np.flatnonzero(image.visible):
            col, row = np.floor(keypoints[part] + 0.5).astype(int)
            assert 0 <= row < pixels.shape[0] and 0 <= col < pixels.shape[1]
            assert nearest_colour(pixels[row, col]) == part, (image.id, part, crop, size)


def test_keypoint_geometry_is_exact():
    box = crop_box((20.7, 10.2, 80.9, 60.0), 120, 90)
    assert box == (20, 10, 100, 70)  # int(x), int(y), int(x) + int(w), int(y) + int(h), as ProtoEval crops
    np.testing.assert_allclose(map_keypoints([[30, 20]], box, (80, 60)), [[10, 10]])  # crop only: a shift
    # upscaling by 2: pixel-centre x maps to (x + 0.5) * 2 - 0.5, so pixel 10 covers 20..21, centre 20.5
    np.testing.assert_allclose(map_keypoints([[30, 20]], box, (160, 120)), [[20.5, 20.5]])
    assert crop_box((-5.0, 85.0, 300.0, 30.0), 120, 90) == (0, 85, 120, 90)  # clipped, never empty


@pytest.mark.parametrize("missing", ["images.txt", "bounding_boxes.txt", "parts/part_locs.txt", "parts/parts.txt"])
def test_missing_file_is_named(cub_root, missing):
    (cub_root / missing).unlink()
    with pytest.raises(DataError, match=str(cub_root / missing)):
        read_cub(cub_root)


def test_bad_rows_are_reported(cub_root):
    with open(cub_root / "bounding_boxes.txt", "a") as f:
        f.write("7 1.0 2.0\n")
    with pytest.raises(DataError, match=r"bounding_boxes\.txt:7: expected 5 fields"):
        read_cub(cub_root)
    write = (cub_root / "bounding_boxes.txt").read_text().splitlines()[:-2]  # image 6 has no box now
    (cub_root / "bounding_boxes.txt").write_text("\n".join(write) + "\n")
    with pytest.raises(DataError, match="no row for image id 6"):
        read_cub(cub_root)
    with pytest.raises(DataError, match="does not exist"):
        read_cub(cub_root / "absent")


def test_export_then_probe_decompose_and_protoeval(cub_root, tmp_path, capsys):
    out = export_image_folder(cub_root, tmp_path / "cub-folder", crop=True)
    assert sorted(p.name for p in (out / "train").iterdir()) == FOLDERS
    assert len(list((out / "val").rglob("*.jpg"))) == 3 and not (out / "classes.csv").exists()
    with open(out / "keypoints.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["visible"] == "1"]
    assert len(rows) == 17
    for row in rows:  # the exported crops keep each keypoint on its mark
        pixels = np.asarray(Image.open(out / row["split"] / row["file"]))
        col, row_ = int(np.floor(float(row["x"]) + 0.5)), int(np.floor(float(row["y"]) + 0.5))
        assert nearest_colour(pixels[row_, col]) == int(row["part"]) - 1

    with_map = export_image_folder(cub_root, tmp_path / "mapped", crop=False, class_map=True, images_per_class=1)
    assert (with_map / "classes.csv").read_text().splitlines()[1] == "001.Tiny_Albatross,0,Tiny Albatross"
    assert len(list(with_map.rglob("*.jpg"))) == 4  # one per class and split

    torch.manual_seed(0)
    save_file(load_backbone("timm:resnet10t", weights="random").model.state_dict(), str(tmp_path / "r10.safetensors"))
    probe = fit_probe(out, "timm:resnet10t", weights=str(tmp_path / "r10.safetensors"), cache_dir=False)
    assert probe.manifest["n_train"] == 3 and probe.manifest["n_val"] == 3
    backbone = load_backbone(f"probe:{probe.save(tmp_path / 'probe', cache_dir=False)}")
    run = run_decomposition(backbone, out, "train", k=1, cache_dir=False)
    report = cub_protoeval(run, backbone, cub_root, seed=0)
    assert (report["n_images"], report["n_classes"]) == (3, 2)
    assert report["image_size"] == backbone.preprocessing.crop_size
    for method in ("nmf", "refined"):
        for kind in ("heatmap", "coefficients"):
            assert 0 <= report["scores"][method][kind]["consistency"] <= 100
            assert 0 <= report["scores"][method][kind]["stability"] <= 100

    save_run(run, tmp_path / "run")  # the same from the command line, the run reloading its probed model
    assert (
        main(
            [
                "cub-eval",
                "--run",
                str(tmp_path / "run"),
                "--cub",
                str(cub_root),
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "cub.json"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "cub.json").read_text())["scores"] == report["scores"]
    assert "consistency" in capsys.readouterr().out
    assert main(["cub-export", "--cub", str(cub_root), "--out", str(tmp_path / "cli"), "--classes", FOLDERS[1]]) == 0
    assert sorted(p.name for p in (tmp_path / "cli" / "val").iterdir()) == [FOLDERS[1]]
    assert main(["cub-export", "--cub", str(tmp_path / "absent"), "--out", str(tmp_path / "x")]) == 2
