"""Mistakes and their culprits on the real sample photos and the embedded Lite0: every culprit found really
flips the prediction when applied through the head, none smaller was missed (checked by brute force), the
per-prototype counts are what switching each prototype off does, and the split halves never meet. Then the
`mistakes` and `story` commands."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from protolib.cli import main
from protolib.data.features import split_features
from protolib.evaluation.intervention import oracle_intervention
from protolib.evaluation.mistakes import (
    culprit_scale,
    find_culprits,
    half_of,
    harmful_edit,
    mistake_figures,
    run_class_space,
)
from protolib.method.head import PrototypeHead
from protolib.pipeline import run_decomposition
from protolib.runs import save_run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def decomposed(lite0, data_dir, feature_cache, tmp_path_factory):
    """The 10 sample classes, 20 photos each, k = 3 (the demo's settings), saved; and their 500 val photos."""
    run = run_decomposition(lite0, data_dir, images_per_class=20, k=3, cache_dir=feature_cache)
    path = save_run(run, tmp_path_factory.mktemp("mistakes") / "run")
    folders = [c["folder"] for c in run.manifest["classes"]]
    sf = split_features(lite0, data_dir, "val", classes=folders, cache_dir=feature_cache)
    return run, path, sf


def _wrong_after(head, pooled, labels, scale):
    return int(head.logits(pooled[None], head.contributions(pooled[None]), scale).argmax()) != int(labels)


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_culprits_flip_the_prediction_and_none_smaller_is_missed(decomposed, lite0):
    run, _, sf = decomposed
    head, pooled, labels, _ = run_class_space(run.head(lite0), sf.pooled, sf.labels, sf.paths)
    found = find_culprits(head, pooled, labels)
    predicted = head.logits(pooled, head.contributions(pooled)).argmax(1)
    assert len(found.culprits) == int((predicted != labels).sum()) > 0
    assert found.by_one, "the demo's settings leave mistakes one switch fixes among the run's classes"
    for c in found.culprits:
        assert int(predicted[c.index]) == c.predicted != c.label
        if c.switched:  # applied through the head itself: the true class is on top, by the margin found
            scale = culprit_scale(head, c)
            edited = head.logits(pooled[c.index : c.index + 1], head.contributions(pooled[c.index : c.index + 1]), scale)[0]
            assert int(edited.argmax()) == c.label
            others = edited.clone()
            others[c.label] = float("-inf")
            assert float(edited[c.label] - others.max()) == pytest.approx(c.margin, abs=1e-4)
            assert c.top_after[0][0] == c.label and c.top_before[0][0] == c.predicted
        # brute force over every prototype of every other class: no single switch was missed
        candidates = [(ci, i) for ci in range(len(head.classes)) for i in range(head.k) if ci != c.label]
        singles = []
        for ci, i in candidates:
            scale = torch.ones(len(head.classes), head.k)
            scale[ci, i] = 0
            if not _wrong_after(head, pooled[c.index], labels[c.index], scale):
                singles.append((ci, i))
        assert bool(singles) == (c.reason == "one"), c
        if c.reason == "more":  # and no pair either
            for (ci, i), (cj, j) in itertools.combinations(candidates, 2):
                scale = torch.ones(len(head.classes), head.k)
                scale[ci, i] = scale[cj, j] = 0
                assert _wrong_after(head, pooled[c.index], labels[c.index], scale)
    smallest = (len(labels) - len(found.culprits) + len(found.by_one) + len(found.by_two)) / len(labels)
    assert smallest >= oracle_intervention(head, pooled, labels)["top1_after"]  # the paper's fix is one of the singles


def test_two_switch_search_on_a_head_that_needs_two():
    """One photo where one class outranks the true one by more than any single prototype gives (two of its
    prototypes are needed), and one where two classes do (one prototype each)."""
    weight, bias = torch.zeros(3, 3), torch.zeros(3)
    prototypes = torch.zeros(3, 2, 3)
    prototypes[1, 0, 0], prototypes[1, 1, 1] = 1.0, 1.0  # class 1: two parts
    prototypes[2, 0, 2], prototypes[2, 1, 0] = 1.0, 0.1  # class 2
    prototypes[0, 0, 0] = 0.5  # class 0 (the true class)
    head = PrototypeHead(weight, bias, torch.arange(3), prototypes)
    pooled = torch.tensor([[1.2, 1.2, 0.0], [1.0, 0.0, 1.0]])  # logits (0.6, 2.4, 0.12) and (0.5, 1.0, 1.1)
    found = find_culprits(head, pooled, torch.tensor([0, 0]))
    first, second = found.culprits
    assert first.reason == "two" and sorted(first.switched) == [(1, 0), (1, 1)]
    assert second.reason == "two" and sorted(second.switched) == [(1, 0), (2, 0)]
    for c in found.culprits:
        assert not _wrong_after(head, pooled[c.index], torch.tensor(0), culprit_scale(head, c))


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_per_prototype_counts_and_the_model_label_space(decomposed, lite0):
    """In the 1000-way space, fixed/broken per prototype are what switching it off through the head does; a
    mistake is 'not_decomposed' exactly when a class without prototypes outranks the true one."""
    run, _, sf = decomposed
    head = run.head(lite0)
    found = find_culprits(head, sf.pooled, sf.labels)
    contributions = head.contributions(sf.pooled)
    logits = head.logits(sf.pooled, contributions)
    right = logits.argmax(1) == sf.labels
    for c in range(len(head.classes)):
        for i in range(head.k):
            scale = torch.ones(len(head.classes), head.k)
            scale[c, i] = 0
            after = head.logits(sf.pooled, contributions, scale).argmax(1) == sf.labels
            assert int(found.fixed_alone[c, i]) == int((after & ~right).sum())
            assert int(found.broken_alone[c, i]) == int((~after & right).sum())
    decomposed_labels = set(head.classes.tolist())
    for m in found.culprits:
        above = (logits[m.index] >= logits[m.index, m.label]).nonzero().flatten().tolist()
        outside = any(a not in decomposed_labels for a in above if a != m.label)
        assert (m.reason == "not_decomposed") == outside


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_split_halves_are_disjoint_and_the_edit_is_scored_on_the_other(decomposed, lite0):
    run, _, sf = decomposed
    head = run.head(lite0)
    halves = [half_of(p) for p in sf.paths]
    assert set(halves) == {0, 1} and half_of(sf.paths[0]) == half_of("/elsewhere/" + sf.paths[0].split("/")[-1])
    edit = harmful_edit(head, sf.pooled, sf.labels, sf.paths)
    assert edit["chosen_on"]["photos"] + edit["scored_on"]["photos"] == len(sf.paths)
    assert edit["chosen_on"]["photos"] == halves.count(0)
    scored = torch.tensor([h == 1 for h in halves])
    scale = torch.ones(len(head.classes), head.k)
    for d, i in edit["switched_off"]:
        scale[head.position(d), i] = 0
    pooled, labels = sf.pooled[scored], sf.labels[scored]
    contributions = head.contributions(pooled)
    for key, edited in (("top1_before", None), ("top1_after", scale)):
        right = head.logits(pooled, contributions, edited).argmax(1) == labels
        assert edit[key] == pytest.approx(float(right.float().mean()))
    # the choice depends on half 0 only: scrambling half 1's labels changes nothing in it
    scrambled = sf.labels.clone()
    scrambled[scored] = scrambled[scored].roll(1)
    again = harmful_edit(head, sf.pooled, scrambled, sf.paths)
    assert again["switched_off"] == edit["switched_off"] and again["chosen_on"] == edit["chosen_on"]


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_figures_name_classes_and_count_every_mistake(decomposed, lite0):
    run, _, sf = decomposed
    figures, _ = mistake_figures(run.head(lite0), sf.pooled, sf.labels, sf.paths, lite0.class_names)
    counted = sum(figures[key] for key in ("fixed_by_one", "fixed_by_two", "not_decomposed", "not_fixed_by_two"))
    assert counted == figures["mistakes"] == len(figures["culprits"])
    assert figures["oracle_smallest"]["top1_before"] == pytest.approx(figures["oracle_paper"]["top1_before"])
    json.dumps(figures)


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_mistakes_command_writes_the_figures_and_refuses_bad_input(decomposed, feature_cache, tmp_path, capsys):
    _, path, _ = decomposed
    out = tmp_path / "mistakes.json"
    argv = ["mistakes", "--run", str(path), "--json", str(out), "--cache", str(feature_cache)]
    assert main(argv) == 0
    figures = json.loads(out.read_text())
    for key in ("mistakes", "fixed_by_one", "fixed_by_two", "culprits", "oracle_paper", "oracle_smallest", "harmful_edit"):
        assert key in figures and key in figures["run_classes"]
    assert set(figures["harmful_edit"]) >= {"chosen_on", "scored_on", "top1_before", "top1_after"}
    assert figures["run_classes"]["fixed_by_one"] >= 1
    written = out.read_text()
    assert main(argv) == 2 and out.read_text() == written  # refused, nothing lost
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert main(["mistakes", "--run", str(tmp_path / "nowhere"), "--json", str(tmp_path / "x.json")]) == 2
    assert main([*argv[:-2], "--overwrite", "--split", "nosuchsplit", "--cache", str(feature_cache)]) == 2
    assert main(["story", "--run", str(path), "--out", str(tmp_path / "story.txt")]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_story_opens_offline_in_chromium_with_every_section(decomposed, feature_cache, tmp_path, browser):
    """The story page, opened from disk with every non-file request aborted: every section renders, every
    picture decodes, and the page asked for nothing."""
    _, path, _ = decomposed
    out = tmp_path / "story.html"
    assert main(["story", "--run", str(path), "--out", str(out), "--cache", str(feature_cache)]) == 0
    assert main(["story", "--run", str(path), "--out", str(out), "--cache", str(feature_cache)]) == 2  # no overwrite
    blocked, failed = [], []
    page = browser.new_page()
    page.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith("file:") else (blocked.append(route.request.url), route.abort())
        ),
    )
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(out.as_uri())
    for section in ("model", "prototypes", "mistakes", "harmful"):
        assert page.locator(f"section#{section} h2").is_visible(), section
    assert page.locator(".mcard").count() >= 1  # a fixed mistake, with its photo and culprit heatmap
    assert page.locator("section#prototypes table.gallery").count() >= 1
    broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
    assert page.evaluate("document.images.length") > 10 and broken == 0
    assert "held out" in page.locator("section#harmful").inner_text()
    assert blocked == [] and failed == []
    page.close()


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_story_escapes_text_from_data(decomposed, lite0, data_dir, feature_cache):
    from protolib.report.story import render_story, story_figures

    run, _, _ = decomposed
    story = story_figures(run, lite0, data_dir, cache_dir=feature_cache, pictures=False)
    story.run["classes"] = ["<script>alert(1)</script>", *story.run["classes"][1:]]
    story.run["name"] = "<b>run</b>"
    page = render_story(story)
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "<b>run</b>" not in page


@pytest.mark.slow  # the 10 sample classes through the real model (the module's run)
def test_page_views_rank_cards_and_open_intervene_on_the_photo(decomposed, lite0):
    from pages.common.mistake_views import cards, intervene_keys, table4_rows, unexplained

    run, _, sf = decomposed
    head, pooled, labels, paths = run_class_space(run.head(lite0), sf.pooled, sf.labels, sf.paths)
    found = find_culprits(head, pooled, labels)
    gallery = cards(found, paths)
    assert len(gallery) == found.count("one") and [c.margin for c in gallery] == sorted((c.margin for c in gallery), reverse=True)
    assert sum(unexplained(found).values()) + len(gallery) == len(found.culprits)
    card = gallery[0]
    keys = intervene_keys(card, "val", head.classes.tolist(), "Data folder")
    assert keys["img_class"] == card.path.split("/")[-2] and keys["img_file"] == card.path.split("/")[-1]
    assert keys[f"iv_classes.{card.path}"] == [card.culprit[0], card.label]  # the culprit's class edited first
    figures, _ = mistake_figures(head, pooled, labels, paths, run.class_names)
    figures["label_space"] = "the run's classes"
    assert table4_rows(figures)[0]["oracle (paper's rule)"] == figures["oracle_paper"]["top1_after"]
