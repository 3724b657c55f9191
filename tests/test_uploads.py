"""Uploaded zips of image folders: real photos extract into a folder the pipeline reads; crafted
malicious or broken archives are refused with a message and leave nothing behind."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from protolib.config import SAMPLE_DATA
from protolib.data import class_folders, scan_split, uploads
from protolib.data.uploads import Limits, UploadError, extract_dataset

DATA = SAMPLE_DATA
TENCH, SPRINGER = "n01440764", "n02102040"

pytestmark = pytest.mark.skipif(not (DATA / "train").is_dir(), reason=f"the sample photos are not at {DATA}")


def photos(split: str, wnid: str, n: int) -> list[Path]:
    return sorted((DATA / split / wnid).iterdir())[:n]


def make_zip(members: dict[str, bytes | Path], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data.read_bytes() if isinstance(data, Path) else data)
    return buffer.getvalue()


def refused(data: bytes, tmp_path: Path, match: str, limits: Limits | None = None) -> None:
    """The archive is refused with ``match`` in the message, and nothing is left in the upload folder."""
    parent = tmp_path / "uploads"
    parent.mkdir(exist_ok=True)
    with pytest.raises(UploadError, match=match):
        extract_dataset(io.BytesIO(data), parent / "ds", limits)
    assert list(parent.iterdir()) == []  # no half-extracted folder, no temporary folder
    assert not (tmp_path / "evil.png").exists()


@pytest.fixture(scope="module")
def one_photo() -> bytes:
    return photos("train", TENCH, 1)[0].read_bytes()


# -- real photos ---------------------------------------------------------------------------------
def test_split_layout_under_a_wrapper_with_classes_csv(tmp_path):
    members = {"my data/classes.csv": (DATA / "classes.csv").read_bytes()}
    for split, n in (("train", 3), ("val", 2)):
        for wnid in (TENCH, SPRINGER):
            members |= {f"my data/{split}/{wnid}/{p.name}": p for p in photos(split, wnid, n)}
    members |= {"my data/train/.DS_Store": b"junk", "__MACOSX/my data/._x.JPEG": b"junk"}
    out = extract_dataset(io.BytesIO(make_zip(members)), tmp_path / "ds")
    assert out.layout == "splits" and out.class_map and out.problems == []
    assert out.counts == {"train": {TENCH: 3, SPRINGER: 3}, "val": {TENCH: 2, SPRINGER: 2}}
    assert out.n_images == 10 and "train/: 6 images in 2 classes" in out.summary()
    for split, n in (("train", 3), ("val", 2)):  # byte for byte the photos that went in
        for p in photos(split, TENCH, n):
            assert (tmp_path / "ds" / split / TENCH / p.name).read_bytes() == p.read_bytes()
    from protolib.backbones import load_backbone

    lite0 = load_backbone()
    classes, problems = class_folders(tmp_path / "ds", "train", lite0.class_names, lite0.wnids)
    assert [c.name for c in classes] == ["tench", "English springer"] and problems == []


def test_class_folders_only_go_to_train_and_other_files_are_reported(tmp_path):
    members = {f"fish/{p.name}": p for p in photos("train", TENCH, 3)}
    members |= {f"dog/{p.name}": p for p in photos("train", SPRINGER, 2)}
    members |= {
        "fish/notes.txt": b"caught on Sunday",
        "dog/fake.jpg": b"this is not a jpeg",
        "dog/cut.JPEG": photos("train", SPRINGER, 3)[2].read_bytes()[:300],
        "stray.png": photos("val", TENCH, 1)[0],  # not in a class folder
        "dog/puppies/deep.JPEG": photos("val", SPRINGER, 1)[0],  # a folder too deep
    }
    out = extract_dataset(io.BytesIO(make_zip(members)), tmp_path / "ds")
    assert out.layout == "classes" and out.counts == {"train": {"dog": 2, "fish": 3}}
    reasons = {p.path: p.reason for p in out.problems}
    assert reasons["fish/notes.txt"] == "not an image file; skipped"
    assert reasons["dog/fake.jpg"].startswith("not a readable image") and "dog/cut.JPEG" in reasons
    assert "not directly in a class folder" in reasons["stray.png"] and "dog/puppies/deep.JPEG" in reasons
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == ["train"]
    assert not (tmp_path / "ds" / "train" / "dog" / "fake.jpg").exists()  # a skipped file is not kept
    images = scan_split(tmp_path / "ds", "train", ["dog", "fish"], ["dog", "fish"])  # the pipeline reads it
    assert len(images) == 5 and images.problems == []


def test_a_damaged_classes_csv_is_dropped_with_a_note(tmp_path, one_photo):
    members = {"classes.csv": b"folder;label\nfish;1\n", "fish/a.png": one_photo, "dog/b.png": one_photo}
    out = extract_dataset(io.BytesIO(make_zip(members)), tmp_path / "ds")
    assert not out.class_map and not (tmp_path / "ds" / "classes.csv").exists()
    assert "must have the columns" in out.problems[0].reason


def test_layout_plans():
    plan = uploads.plan_layout
    assert plan([("a", "x.png"), ("b", "y.png")]) == ("classes", ())
    assert plan([("w", "a", "x.png"), ("w", "b", "y.png")]) == ("classes", ("w",))
    assert plan([("w", "a", "x.png")]) == ("classes", ("w",))  # one class under a wrapper
    assert plan([("train", "a", "x.png"), ("val", "a", "y.png")]) == ("splits", ())
    assert plan([("w", "Train", "a", "x.png")]) == ("splits", ("w",))
    with pytest.raises(UploadError, match="inside a class folder"):
        plan([("x.png",)])


# -- refused archives ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil.png", r"outside the archive"),
        ("train/fish/../../../evil.png", r"outside the archive"),
        ("..\\evil.png", r"outside the archive"),
        ("/tmp/evil.png", r"absolute path"),
        ("C:/evil.png", r"absolute path"),
    ],
)
def test_path_traversal_and_absolute_paths_are_refused(tmp_path, one_photo, name, match):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fish/ok.png", one_photo)
        archive.writestr(zipfile.ZipInfo(name), one_photo)  # ZipInfo keeps the name as given
    assert zipfile.ZipFile(io.BytesIO(buffer.getvalue())).namelist()[1] == name
    refused(buffer.getvalue(), tmp_path, match)


def test_symlinks_and_passwords_are_refused(tmp_path, one_photo):
    link = zipfile.ZipInfo("fish/link.png")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fish/ok.png", one_photo)
        archive.writestr(link, "/etc/passwd")
    refused(buffer.getvalue(), tmp_path, "symbolic link")
    locked = bytearray(make_zip({"fish/locked.png": one_photo}))
    central = locked.rindex(b"PK\x01\x02")  # zipfile writes no encryption flag itself: set it in the central directory
    locked[central + 8] |= 0x1
    refused(bytes(locked), tmp_path, "password-protected")


def test_zip_bombs_are_refused(tmp_path, one_photo, monkeypatch):
    zeros = b"\0" * (8 * 1024**2)  # 8 MB that deflate to about 8 kB
    bomb = make_zip({"fish/a.png": one_photo} | {f"fish/{i}.bmp": zeros for i in range(3)})
    assert len(bomb) < 100_000
    refused(bomb, tmp_path, r"would unpack to 24 MB, more than the 16 MB", Limits(total_bytes=16 * 1024**2))
    refused(bomb, tmp_path, r"would be 8 MB, more than 4 MB for one image", Limits(file_bytes=4 * 1024**2))
    many = make_zip({f"fish/{i}.png": one_photo for i in range(6)})
    refused(many, tmp_path, "6 members, more than the 5 allowed", Limits(members=5))
    # declared sizes can lie: with that check out of the way, the bytes written are counted too
    monkeypatch.setattr(uploads, "_check", lambda members, limits: None)
    refused(bomb, tmp_path, "unpacks to more than the 16 MB allowed", Limits(total_bytes=16 * 1024**2))
    refused(bomb, tmp_path, "unpacks to more than 4 MB", Limits(file_bytes=4 * 1024**2))


def test_corrupt_and_empty_archives_are_refused(tmp_path, one_photo):
    refused(b"PK\x03\x04 definitely not a real zip", tmp_path, "not a zip archive, or it is damaged")
    refused(one_photo, tmp_path, "not a zip archive")  # a photo uploaded as the zip
    good = make_zip({"fish/a.png": one_photo, "dog/b.png": one_photo})
    refused(good[: len(good) // 2], tmp_path, "not a zip archive, or it is damaged")  # cut short
    stored = bytearray(make_zip({"fish/a.png": one_photo, "dog/b.png": one_photo}, zipfile.ZIP_STORED))
    stored[len(one_photo) // 2] ^= 0xFF  # one flipped byte in the first photo: its checksum fails mid-extraction
    refused(bytes(stored), tmp_path, r"damaged \(Bad CRC-32")
    refused(make_zip({"readme.txt": b"hello"}), tmp_path, "no image files")
    not_images = make_zip({"fish/a.png": b"not a png", "dog/b.png": b"nor this"})
    refused(not_images, tmp_path, "no file of the archive is a readable image")


def test_an_existing_folder_is_never_overwritten(tmp_path, one_photo):
    (tmp_path / "ds").mkdir()
    with pytest.raises(FileExistsError):
        extract_dataset(io.BytesIO(make_zip({"fish/a.png": one_photo})), tmp_path / "ds")
