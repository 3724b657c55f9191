"""One stream of images for all classes, and a feature cache that fits a disk, on the sample photos with the real
Lite0: the stream gives each class the features its own extraction gives, writes the same cache entries, and
a cache held under a small limit (least recently used out, float16 in) keeps a decomposition exact with respect
to the features it used. Device-dependent branches (the GPU batch size, autocast) run here on the CPU."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch

from protolib import config
from protolib.data import BadImage, load_image
from protolib.data import feature_cache as fc
from protolib.data.features import CPU_BATCH, _forward, batch_size_for, cache_key, extract_features, stream_features, workers_for
from protolib.pipeline import run_decomposition

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["n01440764", "n02102040", "n02979186"]


@pytest.fixture(scope="module")
def groups(data_dir):
    return [sorted((data_dir / "train" / c).iterdir())[:3] for c in CLASSES]


def test_stream_gives_each_class_its_own_features(lite0, groups, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a photo")
    mixed = [groups[0], [*groups[1], bad], [bad], groups[2]]  # a batch of 4 runs across classes
    streamed = list(stream_features(lite0, mixed, batch_size=4, cache_dir=False))
    assert isinstance(streamed[2], BadImage)  # a class with no readable photo does not stop the others
    assert [p.reason for p in streamed[1].problems] and streamed[1].paths == [str(p) for p in groups[1]]
    for group, got in zip([groups[0], groups[1], groups[2]], [streamed[0], streamed[1], streamed[3]]):
        alone = extract_features(lite0, group, cache_dir=False)
        assert torch.equal(got.feats, alone.feats) and got.paths == alone.paths
        torch.testing.assert_close(got.logits, alone.logits, rtol=0, atol=1e-5)


def test_stream_writes_the_per_class_entries_and_reads_them_back(lite0, groups, tmp_path, monkeypatch):
    first = list(stream_features(lite0, groups, batch_size=4, cache_dir=tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{cache_key(lite0, g)}.safetensors" for g in groups)
    with fc.safe_open(str(fc.entry_path(tmp_path, cache_key(lite0, groups[0]))), "pt") as f:
        assert f.get_tensor("feats").dtype == torch.float16  # half the disk
    monkeypatch.setattr(type(lite0), "spatial_features", lambda *a: pytest.fail("the backbone ran on a cached class"))
    for group, got in zip(groups, first):
        again = extract_features(lite0, group, cache_dir=tmp_path)
        assert torch.equal(again.feats, got.feats) and torch.equal(again.logits, got.logits)


def test_stored_logits_are_the_heads_on_the_stored_features(lite0, groups, tmp_path):
    feats = extract_features(lite0, groups[0], cache_dir=tmp_path)
    assert torch.equal(feats.feats, feats.feats.half().float())  # float16 values
    linear = feats.pooled @ lite0.head_weight.T + lite0.head_bias
    torch.testing.assert_close(linear, feats.logits, rtol=0, atol=1e-4)
    fresh = extract_features(lite0, groups[0], cache_dir=False)  # float32: differs by float16 rounding only
    assert 0 < float((fresh.feats - feats.feats).abs().max()) <= 1e-2 * float(fresh.feats.abs().max())


def test_autocast_branch_keeps_the_head_exact_on_the_features_it_returns(lite0, groups):
    x = torch.stack([lite0.preprocessing.transform()(load_image(p)) for p in groups[0]])
    feats, logits = _forward(lite0, x, mixed=True, stored=True)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats.mean(dim=(1, 2)) @ lite0.head_weight.T + lite0.head_bias, logits, rtol=0, atol=1e-4)


def test_batch_size_fits_the_device():
    gpu = SimpleNamespace(device=torch.device("cuda"), preprocessing=SimpleNamespace(crop_size=224))
    per_image = 3 * 224 * 224 * 4 * 64
    assert batch_size_for(gpu, free_bytes=80 * 1024**3) == 512  # an idle H100: capped
    assert batch_size_for(gpu, free_bytes=2 * 100 * per_image) == 100
    assert batch_size_for(gpu, free_bytes=10 * 1024**2) == 8  # a nearly full GPU still makes progress
    assert batch_size_for(SimpleNamespace(device=torch.device("cpu")), free_bytes=None) == CPU_BATCH
    assert workers_for(torch.device("cpu"), 10) == 0 and workers_for(torch.device("cuda"), 1000) >= 1
    assert workers_for(torch.device("cpu"), 1000) == 0


@pytest.mark.parametrize("text", ["abc", "0", "-5", "inf", "nan", "1e400"])
def test_cache_limit_is_validated(text, monkeypatch):
    monkeypatch.setenv("PROTOLIB_CACHE_LIMIT_MB", text)
    with pytest.raises(ValueError, match=r"\$PROTOLIB_CACHE_LIMIT_MB"):
        config.cache_limit_bytes()


def test_cache_limit_default_and_value(monkeypatch):
    monkeypatch.delenv("PROTOLIB_CACHE_LIMIT_MB", raising=False)
    assert config.cache_limit_bytes() == config.DEFAULT_CACHE_LIMIT_MB * 1024**2
    monkeypatch.setenv("PROTOLIB_CACHE_LIMIT_MB", "1.5")
    assert config.cache_limit_bytes() == int(1.5 * 1024**2)


def test_least_recently_used_entries_go_first(tmp_path):
    sizes = []
    for i in range(4):
        fc.write_entry(tmp_path / f"e{i}.safetensors", torch.zeros(1, 8, 8, 64), torch.zeros(1, 10), {}, limit=10**9)
        sizes.append((tmp_path / f"e{i}.safetensors").stat().st_size)
        os.utime(tmp_path / f"e{i}.safetensors", (1000 + i, 1000 + i))  # e0 oldest
    assert fc.read_entry(tmp_path / "e0.safetensors") is not None  # a read makes e0 the newest
    fc.write_entry(tmp_path / "e4.safetensors", torch.zeros(1, 8, 8, 64), torch.zeros(1, 10), {}, limit=3 * sizes[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e0.safetensors", "e3.safetensors", "e4.safetensors"]
    assert fc.usage(tmp_path) == (3, 3 * sizes[0])
    fc.write_entry(tmp_path / "big.safetensors", torch.zeros(4, 8, 8, 64), torch.zeros(4, 10), {}, limit=sizes[0])
    assert fc.usage(tmp_path) == (0, 0)  # larger than the whole limit: the others made room, then it went too
    fc.write_entry(tmp_path / "e5.safetensors", torch.zeros(1, 8, 8, 64), torch.zeros(1, 10), {}, limit=sizes[0])
    (tmp_path / "notes.txt").write_text("not an entry")
    assert fc.clear(tmp_path) == 1 and fc.usage(tmp_path) == (0, 0) and (tmp_path / "notes.txt").is_file()


def test_a_decomposition_under_a_small_cache_limit_stays_exact(lite0, data_dir, tmp_path, monkeypatch):
    """1000 classes x 4 photos under 500 MB, scaled down: 10 classes x 4 photos under 2 MB (about 3 entries)."""
    monkeypatch.setenv("PROTOLIB_CACHE_LIMIT_MB", "2")
    cache = tmp_path / "cache"
    run = run_decomposition(lite0, data_dir, images_per_class=4, k=2, cache_dir=cache)
    entries, size = fc.usage(cache)
    assert len(run.classes) == 10 and 0 < entries < 10 and size <= 2 * 1024**2
    head = run.head(lite0)
    for folder, paths in run.manifest["images"].items():
        feats = extract_features(lite0, paths, cache_dir=cache)  # evicted classes come back the same
        logits, _ = head(feats.feats)
        scale = max(1.0, float(feats.logits.abs().max()))
        assert float((logits - feats.logits).abs().max()) <= 1e-4 * scale, folder
        assert fc.usage(cache)[1] <= 2 * 1024**2


def test_a_malformed_cache_limit_stops_the_command_before_any_work(monkeypatch, tmp_path, capsys):
    from protolib import cli

    monkeypatch.setenv("PROTOLIB_CACHE_LIMIT_MB", "-1")
    code = cli.main(
        [
            "decompose",
            "--classes",
            "tench",
            "--images-per-class",
            "2",
            "--k",
            "2",
            "--device",
            "cpu",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 2 and "$PROTOLIB_CACHE_LIMIT_MB" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
