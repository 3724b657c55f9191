"""The second round of the bad-input table (rows 0-12): each row's input, on real photos and the real
embedded model, gets a one-line error (command line: exit code 2, no traceback) or the right behaviour."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from protolib import config
from protolib.cli import main
from protolib.data import BadImage, DataError, class_folders, load_image, scan_split, split_images
from protolib.files import TargetRefused, atomic_path
from protolib.pipeline import run_decomposition
from protolib.runs import RunError, load_run, save_run
from protolib.runs.listing import checked_runs, list_runs
from protolib.runs.schema import MANIFEST, TENSORS
from protolib.workspace.cleanup import clean_up
from tests.helpers import SPRINGER, TENCH, cli


@pytest.fixture(scope="module")
def run(lite0, data_dir, feature_cache):
    return run_decomposition(lite0, data_dir, classes=[TENCH, SPRINGER], images_per_class=6, k=3, cache_dir=feature_cache)


@pytest.fixture
def saved(run, tmp_path):
    return save_run(run, tmp_path / "run")


def photo(data_dir, folder=TENCH, i=0):
    return sorted((data_dir / "val" / folder).iterdir())[i]


def own_folder(data_dir, root, names=("fish", "dog"), n=12):
    """An ImageFolder-layout copy of two sample classes under names that are no ImageNet wnid."""
    for wnid, name in zip((TENCH, SPRINGER), names):
        (root / name).mkdir(parents=True)
        for p in sorted((data_dir / "train" / wnid).iterdir())[:n]:
            shutil.copy(p, root / name / p.name)
    return root


# -- row 0: a run knows its data ----------------------------------------------------------------------
def test_row0_a_probe_run_is_evaluated_on_its_own_photos_and_refuses_the_sample(data_dir, tmp_path, capsys):
    data = own_folder(data_dir, tmp_path / "mine")
    common = ["--device", "cpu", "--cache", str(tmp_path / "cache")]
    assert main(["probe", "--data", str(data), "--images-per-class", "10", "--out", str(tmp_path / "probe"), *common]) == 0
    assert (
        main(
            [
                "decompose",
                "--probe",
                str(tmp_path / "probe"),
                "--k",
                "2",
                "--images-per-class",
                "6",
                "--out",
                str(tmp_path / "run"),
                *common,
            ]
        )
        == 0
    )
    capsys.readouterr()
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    code, err = cli(capsys, "evaluate", "--run", str(tmp_path / "run"), "--json", str(tmp_path / "e.json"), *common)
    figures = json.loads((tmp_path / "e.json").read_text())
    assert code == 0 and f"data: {data.resolve()}" in err  # says which folder it used
    held_out = sum(len(split_images(data, "val", name)) for name in ("fish", "dog"))
    assert figures["n_images"] == held_out and figures["top1_original"] > 0.5  # its photos, its classes
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before  # nothing written in the run
    # the sample photos' ImageNet folders are not the probe's classes: refused, not mapped onto classes 0 and 1
    code, err = cli(capsys, "evaluate", "--run", str(tmp_path / "run"), "--data", str(data_dir), *common)
    assert code == 2 and "not the run's" in err and "fish" in err
    code, err = cli(
        capsys, "report", "--run", str(tmp_path / "run"), "--data", str(data_dir), "--out", str(tmp_path / "r.html"), *common
    )
    assert code == 2 and "not the run's" in err and not (tmp_path / "r.html").exists()


def test_row0_a_folder_run_defaults_to_its_data_folder(lite0, data_dir, tmp_path, capsys):
    root = tmp_path / "two"
    for wnid in (TENCH, SPRINGER):
        shutil.copytree(data_dir / "train" / wnid, root / wnid)
    common = ["--device", "cpu", "--cache", str(tmp_path / "cache")]
    assert (
        main(["decompose", "--data", str(root), "--k", "2", "--images-per-class", "6", "--out", str(tmp_path / "r"), *common]) == 0
    )
    capsys.readouterr()
    assert (
        main(["evaluate", "--run", str(tmp_path / "r"), "--images-per-class", "3", "--json", str(tmp_path / "e.json"), *common])
        == 0
    )
    assert f"data: {root.resolve()}" in capsys.readouterr().err
    assert json.loads((tmp_path / "e.json").read_text())["n_images"] == 6  # 2 classes x 3, not the sample's 10 x 3


# -- row 1: images bounded in pixels --------------------------------------------------------------------
@pytest.mark.parametrize("size", [(20000, 1), (4000, 1), (1, 3000)])
def test_row1_a_very_thin_image_is_refused_before_it_is_decoded(tmp_path, size):
    path = tmp_path / "thin.png"
    Image.new("RGB", size).save(path)
    with pytest.raises(BadImage, match="too thin"):
        load_image(path)


def test_row1_a_thin_image_is_a_skip_reason_and_a_one_line_error(saved, data_dir, tmp_path, capsys, lite0):
    from protolib.data.features import extract_features

    thin = tmp_path / "thin.png"
    Image.new("RGB", (20000, 1)).save(thin)
    feats = extract_features(lite0, [photo(data_dir), thin], cache_dir=tmp_path / "cache")
    assert len(feats.paths) == 1 and "too thin" in feats.problems[0].reason
    code, err = cli(capsys, "explain", "--run", str(saved), str(thin), "--out", str(tmp_path / "e.png"), "--device", "cpu")
    assert code == 2 and "too thin" in err and not (tmp_path / "e.png").exists()


# -- row 2: no command writes over what it did not make ------------------------------------------------
def test_row2_outputs_that_are_never_written(saved, data_dir, tmp_path, capsys):
    manifest = (saved / MANIFEST).read_text()
    image = str(photo(data_dir))
    link_target = tmp_path / "precious.txt"
    link_target.write_text("precious")
    (tmp_path / "link.pt").symlink_to(link_target)
    (tmp_path / "link.png").symlink_to(link_target)
    cases = [
        (["export", "--run", str(saved), "--out", str(saved / MANIFEST)], "already exists"),
        (["export", "--run", str(saved), "--out", str(saved / "model.pt"), "--overwrite"], "inside the run folder"),
        (["export", "--run", str(saved), "--out", str(tmp_path / "link.pt"), "--overwrite"], "symbolic link"),
        (["export", "--run", str(saved), "--out", "/dev/null", "--overwrite"], "not a regular file"),
        (["explain", "--run", str(saved), image, "--out", str(tmp_path / "link.png"), "--overwrite"], "symbolic link"),
        (["explain", "--run", str(saved), image, "--out", str(saved / "e.png")], "inside the run folder"),
        (["evaluate", "--run", str(saved), "--json", str(saved / MANIFEST), "--overwrite"], "inside the run folder"),
        (["evaluate", "--run", str(saved), "--json", str(tmp_path)], "is a folder"),
        (["report", "--run", str(saved), "--out", str(saved / "report.html")], "inside the run folder"),
        (["compare", "--runs", str(saved), str(saved), "--class", "tench", "--out", str(tmp_path / "link.png")], "symbolic link"),
        (["decompose", "--out", str(tmp_path / "link.pt"), "--overwrite"], "symbolic link"),
        (["probe", "--out", str(saved)], "already exists"),
        (["probe", "--out", "/dev/null", "--overwrite"], "not a folder"),
    ]
    for argv, words in cases:
        code, err = cli(capsys, *argv, *([] if argv[0] == "export" else ["--device", "cpu"]))
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert (saved / MANIFEST).read_text() == manifest and link_target.read_text() == "precious"
    assert (tmp_path / "link.pt").is_symlink() and os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_row2_an_existing_file_is_replaced_only_with_overwrite(saved, data_dir, tmp_path, capsys):
    out = tmp_path / "e.png"
    out.write_bytes(b"mine")
    argv = ["explain", "--run", str(saved), str(photo(data_dir)), "--out", str(out), "--device", "cpu"]
    code, err = cli(capsys, *argv)
    assert code == 2 and "--overwrite" in err and out.read_bytes() == b"mine"
    assert cli(capsys, *argv, "--overwrite")[0] == 0 and Image.open(out).size[0] > 600


def test_row2_atomic_writes_never_go_through_a_link(tmp_path):
    (tmp_path / "target").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(TargetRefused, match="symbolic link"):
        with atomic_path(tmp_path / "link") as tmp:
            tmp.write_text("written")
    assert (tmp_path / "target").read_text() == "kept"


# -- rows 3 and 6: settings checked when read ------------------------------------------------------------
def test_row3_max_age_0_means_never(tmp_path):
    limits = config.sharing_limits({config.MAX_AGE_ENV: "0"})
    assert limits.max_age == math.inf
    folder = tmp_path / "uploads" / "someone"
    folder.mkdir(parents=True)
    os.utime(folder, (time.time() - 10**7, time.time() - 10**7))
    assert clean_up(tmp_path / "runs", tmp_path / "uploads", limits.max_age) == [] and folder.is_dir()


@pytest.mark.parametrize(
    "name, value",
    [
        (config.SESSION_QUOTA_ENV, "inf"),
        (config.SESSION_QUOTA_ENV, "1e400"),
        (config.TOTAL_QUOTA_ENV, "nan"),
        (config.SESSION_QUOTA_ENV, "0"),
        (config.MAX_AGE_ENV, "-1"),
        (config.MAX_AGE_ENV, "a day"),
        (config.CACHE_ENV, "/dev/null"),
        (config.RUNS_ENV, "~nosuchuser/x"),
    ],
)
def test_row6_a_bad_setting_is_one_message_naming_it(name, value):
    with pytest.raises(config.ConfigError, match=name):
        config.check_settings({name: value})


def test_row6_a_bad_setting_stops_the_app_at_start(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(config.SESSION_QUOTA_ENV, "inf")
    app = AppTest.from_file(str(Path(__file__).parent.parent / "app.py"), default_timeout=60).run()
    assert not app.exception
    assert [e.value for e in app.error] and config.SESSION_QUOTA_ENV in app.error[0].value


# -- row 4: text from data is text ------------------------------------------------------------------------
EVIL = '<img src=http://127.0.0.1:9/x> <a href="http://127.0.0.1:9/y">z</a> ![i](http://127.0.0.1:9/m) :red[r]'


def test_row4_markdown_text_is_escaped():
    from pages.common.figures import md

    shown = md(EVIL)
    assert re.search(r"(?<!\\)[<>\[\]!]", shown) is None and not re.search(r"[^\\]://", shown)  # markup escaped, no bare URL
    assert shown.replace("\\", "") == EVIL


def test_row4_the_report_draws_class_names_as_text(run, lite0, data_dir, feature_cache):
    from protolib.report.build_comparison import comparison_report
    from protolib.report.html import render_comparison

    evil = dict(run.manifest, classes=[dict(c, name=EVIL if i == 0 else c["name"]) for i, c in enumerate(run.manifest["classes"])])
    other = type(run)(
        evil, run.classes, run.nmf_prototypes, run.alpha, run.refined_by_strategy, run.feature_error, run.presence_scale
    )
    report, _ = comparison_report([other, other], [lite0, lite0], data_dir, EVIL, "val", 2, "heatmaps", cache_dir=feature_cache)
    page = render_comparison(report)
    assert "<img src=http://127.0.0.1:9" not in page and 'href="http://127.0.0.1:9' not in page  # (plotly.js has links)
    assert "&lt;img src=http://127.0.0.1:9/x&gt;" in page


# -- row 5: data roots closed under links -----------------------------------------------------------------
def test_row5_links_leading_out_of_a_data_folder_are_refused_at_every_depth(data_dir, tmp_path, lite0):
    root = own_folder(data_dir, tmp_path / "team", names=(TENCH, "ignored"), n=5)
    shutil.rmtree(root / "ignored")
    other = tmp_path / "uploads" / "other-session" / "data"
    shutil.copytree(data_dir / "train" / SPRINGER, other / SPRINGER)
    (root / SPRINGER).symlink_to(other / SPRINGER)  # a class folder that is a link out
    secret = other / SPRINGER / sorted(os.listdir(other / SPRINGER))[0]
    (root / TENCH / "aa-inside.jpg").symlink_to(root / TENCH / sorted(os.listdir(root / TENCH))[-1])  # stays inside
    (root / TENCH / "zz-secret.jpg").symlink_to(secret)  # a file that is a link out
    classes, problems = class_folders(root, "train", lite0.class_names, lite0.wnids)
    assert [c.folder for c in classes] == [TENCH] and any("link leading out" in p.reason for p in problems)
    files = split_images(root, "train", TENCH) + split_images(root, "val", TENCH)
    names = {p.name for p in files}
    assert "zz-secret.jpg" not in names and "aa-inside.jpg" in names
    images = scan_split(root, "train", lite0.class_names, lite0.wnids)
    assert not any(p.resolve().is_relative_to(other) for paths in images.images.values() for p in paths)


# -- row 7: runs validated down to dtypes and shapes --------------------------------------------------------
@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda t: t.__setitem__("classes", t["classes"].float()), "not integer labels"),
        (lambda t: t.__setitem__("alpha", torch.tensor(1.0)), "alpha has shape"),
        (lambda t: t.__setitem__("alpha", torch.zeros(2, 5)), "alpha has shape"),
        (lambda t: t.__setitem__("presence_scale", torch.ones(2, 3, dtype=torch.bool)), "not a floating-point"),
        (
            lambda t: t.__setitem__("refined.optimized", t["refined.optimized"][..., :100].contiguous()),
            "refined.optimized has shape",
        ),
        (lambda t: t.__setitem__("scale", torch.full((2, 3), float("nan"))), "scale holds NaN"),
        (lambda t: t.__setitem__("feature_error", torch.tensor([1.0, float("inf")])), "feature_error holds NaN"),
    ],
)
def test_row7_damaged_tensors_are_refused_and_listed_with_their_reason(saved, change, reason):
    tensors = load_file(str(saved / TENSORS))
    change(tensors)
    save_file(tensors, str(saved / TENSORS))
    with pytest.raises(RunError, match=reason):
        load_run(saved)
    if "NaN" not in reason:  # a listing reads the tensors' header only: dtypes and shapes, not values
        (listed,) = checked_runs(saved.parent)
        assert listed.manifest is None and reason in listed.problem


def test_row7_prototypes_of_another_feature_size_are_refused(saved, lite0):
    tensors = load_file(str(saved / TENSORS))
    tensors = {k: (v[..., :640].contiguous() if v.ndim == 3 else v) for k, v in tensors.items()}
    save_file(tensors, str(saved / TENSORS))
    with pytest.raises(RunError, match="640 features"):
        load_run(saved, lite0)


# -- row 8: two class folders, one label ----------------------------------------------------------------------
def test_row8_two_folders_mapped_to_one_label_are_refused_before_any_work(data_dir, tmp_path, capsys):
    root = own_folder(data_dir, tmp_path / "data", names=("a", "b"), n=4)
    (root / "classes.csv").write_text("wnid,imagenet_index,name\na,0,tench\nb,0,tench again\n")
    cache = tmp_path / "cache"
    code, err = cli(
        capsys, "decompose", "--data", str(root), "--out", str(tmp_path / "r"), "--device", "cpu", "--cache", str(cache)
    )
    assert code == 2 and "both map to label 0" in err and not (tmp_path / "r").exists()
    assert not cache.exists() or not any(cache.rglob("*.safetensors"))


# -- row 9: interrupted and concurrent saves ------------------------------------------------------------------
def test_row9_a_save_killed_between_its_renames_is_recovered_on_listing(saved, run, tmp_path, capsys):
    new = saved.with_name(f".{saved.name}.abcd1234.tmp")
    shutil.copytree(saved, new)  # the finished new run, not yet renamed
    os.replace(saved, saved.with_name(f".{saved.name}.old"))  # the old one moved aside: then the process died
    assert list_runs(saved.parent) == [saved]  # listed again: the old run is back
    assert load_run(saved).k == 3 and sorted(p.name for p in saved.parent.iterdir()) == ["run"]
    os.replace(saved, saved.with_name(f".{saved.name}.old"))
    cache = tmp_path / "cache"  # decompose finds the old run before computing anything
    code, err = cli(capsys, "decompose", "--out", str(saved), "--device", "cpu", "--cache", str(cache))
    assert code == 2 and "already exists" in err and not cache.exists()


def test_row9_concurrent_overwrites_end_in_one_complete_run(run, tmp_path):
    target = save_run(run, tmp_path / "run")
    outcomes, barrier = [], threading.Barrier(6)

    def save():
        barrier.wait()
        for _ in range(5):
            try:
                save_run(run, target, overwrite=True)
                outcomes.append("saved")
            except FileExistsError as exc:
                outcomes.append(str(exc))

    threads = [threading.Thread(target=save) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "saved" in outcomes and len(outcomes) == 30
    assert all(o == "saved" or "being written by another save" in o for o in outcomes)
    assert load_run(target).k == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# -- row 10: a write that fails, outputs that are folders, caches that cannot be ------------------------------
@pytest.mark.parametrize("cache, words", [("~nosuchuser/x", "--cache"), ("/dev/null", "is not a folder")])
def test_row10_a_cache_that_cannot_be_is_named_before_any_work(tmp_path, capsys, cache, words):
    code, err = cli(capsys, "decompose", "--out", str(tmp_path / "r"), "--cache", cache, "--device", "cpu")
    assert code == 2 and words in err and cache in err


def test_row10_a_write_refused_by_the_system_is_one_line(saved, data_dir, tmp_path, capsys, monkeypatch):
    import protolib.files as files

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(kwargs.get("dir", "")))

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)  # as in a read-only folder (tests run as root here)
    code, err = cli(
        capsys, "explain", "--run", str(saved), str(photo(data_dir)), "--out", str(tmp_path / "e.png"), "--device", "cpu"
    )
    assert code == 2 and "Permission denied" in err and len(err.strip().splitlines()) == 1


# -- row 11: digits that are not ASCII ----------------------------------------------------------------------
def test_row11_superscript_and_arabic_digits_are_not_labels(data_dir, tmp_path, lite0, saved, capsys):
    root = own_folder(data_dir, tmp_path / "data", names=("²", "٣"), n=4)
    shutil.copytree(data_dir / "train" / TENCH, root / "5")  # an ASCII number still maps
    classes, problems = class_folders(root, "train", lite0.class_names, lite0.wnids)
    assert [(c.folder, c.label) for c in classes] == [("5", 5)]
    assert sorted(os.path.basename(p.path) for p in problems) == ["²", "٣"]
    code, err = cli(
        capsys,
        "explain",
        "--run",
        str(saved),
        str(photo(data_dir)),
        "--label",
        "٣",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "e.png"),
    )
    assert code == 2 and "not a class this run decomposed" in err
    (root / "classes.csv").write_text("wnid,imagenet_index,name\n²,²,two\n")
    with pytest.raises(DataError, match="ASCII digits"):
        class_folders(root, "train", lite0.class_names, lite0.wnids)


# -- row 12: file names that do not say what is written ----------------------------------------------------------
def test_row12_output_names_must_say_their_format(saved, data_dir, tmp_path, capsys):
    code, err = cli(
        capsys, "explain", "--run", str(saved), str(photo(data_dir)), "--out", str(tmp_path / "name"), "--device", "cpu"
    )
    assert code == 2 and ".png" in err and not list(tmp_path.glob("name*"))
    code, err = cli(capsys, "export", "--run", str(saved), "--out", str(tmp_path / "model.onnx"))
    assert code == 2 and ".pt" in err and "ONNX" in err and not (tmp_path / "model.onnx").exists()
