"""Dead and duplicate prototypes on the sample photos and the real Lite0 model: the marks come from the same
numbers the cards show, and a prototype that carries nothing or repeats another's part map is said as such."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pages.common.edit_views import prototype_table
from pages.common.viewmodels import prototype_cards
from protolib.data import DataError
from protolib.data.features import extract_features
from protolib.evaluation.compare import contribution_shares
from protolib.evaluation.k_choice import k_sweep_point
from protolib.evaluation.prototype_health import (
    DEAD_SHARE,
    DUPLICATE_CORRELATION,
    class_health,
    health_counts,
    training_health,
)
from protolib.pipeline import run_decomposition
from protolib.runs import save_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(lite0, data_dir, feature_cache):
    """The issue's setting for a dead prototype: 4 photos per class, k = 3."""
    return run_decomposition(lite0, data_dir, images_per_class=4, k=3, cache_dir=feature_cache)


@pytest.fixture(scope="module")
def health(run, lite0, feature_cache):
    return training_health(run, lite0, feature_cache)


def test_shares_and_correlations_are_the_cards_numbers(run, health, lite0, feature_cache):
    head = run.head(lite0)
    assert set(health) == set(run.classes.tolist())
    for position, entry in enumerate(run.manifest["classes"]):
        feats = extract_features(lite0, run.manifest["images"][entry["folder"]], cache_dir=feature_cache).feats
        h = health[int(run.classes[position])]
        mean = head.contributions(feats.mean(dim=(1, 2)))[:, position].mean(dim=0)
        torch.testing.assert_close(h.share, contribution_shares(mean), atol=1e-5, rtol=1e-4)
        maps = head.presence(feats, position).permute(1, 0, 2, 3).reshape(run.k, -1)  # the part maps the app draws
        torch.testing.assert_close(
            h.correlation, torch.from_numpy(np.corrcoef(maps.double().numpy())).float(), atol=1e-4, rtol=1e-4
        )
        assert h.dead == tuple(bool(s < DEAD_SHARE) for s in h.share)
        for i, j in enumerate(h.duplicate_of):
            assert (j is None) == all(float(h.correlation[i, m]) <= DUPLICATE_CORRELATION for m in range(i))
        cards = prototype_cards(
            run.alpha[position],
            head.refined_prototypes[position],
            lite0.head_weight,
            lite0.class_names,
            entry["name"],
            head.contributions(feats.mean(dim=(1, 2)))[:, position],
            health=h,
        )
        for i, card in enumerate(cards):
            assert card.share == pytest.approx(float(h.share[i]), abs=1e-5)
            assert ("dead" in card.health) == h.dead[i] and ("duplicate" in card.health) == (h.duplicate_of[i] is not None)
            assert card.row()["dead or duplicate"] == card.health


def test_a_prototype_that_carries_nothing_is_marked_dead(health, run):
    """With 4 photos per class some class gets a prototype below 2 % of its logit (the issue's case), and its
    card and table row say so; the live ones say nothing."""
    dead = [(label, i) for label, h in health.items() for i, d in enumerate(h.dead) if d]
    assert dead, {label: h.share.tolist() for label, h in health.items()}
    label, i = dead[0]
    note = health[label].note(i)
    assert note.startswith("dead:") and "% of the logit" in note
    live = [(lb, j) for lb, h in health.items() for j in range(run.k) if not h.dead[j] and h.duplicate_of[j] is None]
    assert live and all(health[lb].note(j) == "" for lb, j in live)
    notes = [[health[int(c)].note(j) for j in range(run.k)] for c in run.classes]
    rows = prototype_table(run.class_names, run.k, run.prototype_name_grid(), torch.ones(len(run.classes), run.k), health=notes)
    position = run.classes.tolist().index(label)
    assert rows[position * run.k + i]["dead or duplicate"] == note


def test_a_repeated_part_map_is_a_duplicate(run, lite0, feature_cache):
    """A prototype whose part map is another's (the same part, scaled) is a duplicate of the earlier one."""
    head = run.head(lite0)
    entry = run.manifest["classes"][0]
    feats = extract_features(lite0, run.manifest["images"][entry["folder"]], cache_dir=feature_cache).feats
    flat = feats.reshape(-1, feats.shape[-1])
    parts = head.part_vectors[0].clone()
    parts[2] = 3 * parts[0]
    h = class_health(flat, head.refined_prototypes[0], parts)
    assert h.duplicate_of[2] == 0 and float(h.correlation[2, 0]) == pytest.approx(1.0, abs=1e-5)
    assert h.note(2).startswith("duplicate of prototype 1") and h.n_duplicate >= 1


def test_the_k_choice_aid_counts_them(run, health, lite0, tmp_path):
    counts = health_counts(health)
    assert counts == {"dead": sum(h.n_dead for h in health.values()), "duplicates": sum(h.n_duplicate for h in health.values())}
    assert counts["dead"] >= 1
    point = k_sweep_point(run, lite0.head_weight, {}, None, counts)
    assert point["dead"] == counts["dead"] and point["duplicates"] == counts["duplicates"]
    assert k_sweep_point(run, lite0.head_weight, {})["dead"] is None  # not measured: not zero
    moved = save_run(run, tmp_path / "run")
    manifest = run.manifest
    gone = type(run)(
        {**manifest, "images": {f: [str(tmp_path / "gone.jpg")] for f in manifest["images"]}},
        run.classes,
        run.nmf_prototypes,
        run.alpha,
        run.refined_by_strategy,
        run.feature_error,
        run.presence_scale,
        path=moved,
    )
    with pytest.raises(DataError, match="is gone"):
        training_health(gone, lite0)
