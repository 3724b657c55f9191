"""The shortcut demo in a real Chromium (`streamlit run app.py`, driven with Playwright): one click on Intervene
builds the benchmark's data and model (first seed, the benchmark's protocol) and opens its run; switching off
every background prototype at once changes the displayed worst-group accuracy to exactly what the library
computes for that edit on the same held-out photos; the edited head saves as a run that reloads with the edit. Then
"Keep only where the object parts are" (the edit in space's keep half) shows the worst group the library computes
for it, above the original model's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.browser import CHROMIUM, RUN_WAIT, WAIT, app_server, expect, go, metric_value, open_page, settle

pytestmark = [
    pytest.mark.slow,  # a real Chromium driving the app server
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-shortcut")
    folders = {name: tmp / name for name in ("runs", "cache", "uploads", "demos")}
    env = {f"PROTOLIB_{name.upper()}": str(path) for name, path in folders.items()}
    with app_server(tmp, **env) as url:
        yield {"url": url, "log": tmp / "server.log", "tmp": tmp, **folders}


def expected_worst_groups(run_path: Path, data: Path, cache: Path) -> tuple[float, float, torch.Tensor]:
    """What the library says: worst-group accuracy on the demo's val photos before and after the mask rule's
    edit, and that edit."""
    from protolib.backbones import load_backbone
    from protolib.benchmarks.mask_rule import mask_rule_scales
    from protolib.data.features import split_features
    from protolib.data.synthetic_shortcut import read_groups
    from protolib.evaluation.intervention import group_accuracy
    from protolib.runs import load_run

    run = load_run(run_path)
    backbone = load_backbone(run.manifest["backbone"])
    run = load_run(run_path, backbone)
    head = run.head(backbone)
    sf = split_features(backbone, data, "val", 50, cache_dir=cache)
    groups = read_groups(data)
    listed = [groups[Path(p).relative_to(data).as_posix()]["group"] for p in sf.paths]
    scales = mask_rule_scales(backbone, run, data)
    contributions = head.contributions(sf.pooled)
    before = group_accuracy(head.logits(sf.pooled, contributions), sf.labels, listed)["worst_group"]
    after = group_accuracy(head.logits(sf.pooled, contributions, scales), sf.labels, listed)["worst_group"]
    return before, after, scales


def expected_kept_worst_group(run_path: Path, data: Path, cache: Path, scales: torch.Tensor) -> float:
    """What the library says the worst group is on the same val photos when each pools only the cells where the
    object parts (those the mask rule keeps on, ``scales`` != 0) are most present."""
    from protolib.backbones import load_backbone
    from protolib.data.features import split_features
    from protolib.data.synthetic_shortcut import read_groups
    from protolib.evaluation.intervention import group_accuracy
    from protolib.method.spatial import SpatialEdit, split_pooling
    from protolib.runs import load_run

    run = load_run(run_path)
    backbone = load_backbone(run.manifest["backbone"])
    head = load_run(run_path, backbone).head(backbone)
    sf = split_features(backbone, data, "val", 50, cache_dir=cache)
    groups = read_groups(data)
    listed = [groups[Path(p).relative_to(data).as_posix()]["group"] for p in sf.paths]
    objects = tuple((int(run.classes[c]), i) for c, i in (scales != 0).nonzero().tolist())
    pooled = split_pooling(head, sf.matrices, len(sf.paths), SpatialEdit(keep_where=objects)).pooled
    return group_accuracy(head(pooled)[0], sf.labels, listed)["worst_group"]


def test_open_the_demo_switch_off_the_background_and_save(browser, server):
    with open_page(browser, server) as page:
        settle(page)
        go(page, "Intervene")
        page.get_by_text("Demo: a model that looks at the background").click()
        page.get_by_role("button", name="Open the shortcut demo").click()
        page.get_by_text("Every prototype of the run").wait_for(timeout=RUN_WAIT)
        settle(page)
        run_path = server["runs"] / "shared" / "shortcut-demo-parts_net"
        data = server["demos"] / "shortcut" / "data"
        assert (run_path / "manifest.json").is_file() and (data / "groups.csv").is_file()

        page.get_by_role("button", name="Compute held-out features").click()
        page.get_by_test_id("stMetric").filter(has_text="Worst group after").wait_for(timeout=RUN_WAIT)
        settle(page)
        assert metric_value(page, "Groups") == "16 · 160 photos"
        before, after, scales = expected_worst_groups(run_path, data, server["cache"])
        assert metric_value(page, "Worst group before") == f"{100 * before:.1f} %"
        assert metric_value(page, "Worst group after") == f"{100 * before:.1f} %"

        page.get_by_role("button", name="Switch off every background prototype").click()
        # on a loaded machine the rerun may start after settle() has seen a quiet page: wait for its result
        expect(page.get_by_text("Intervention:")).to_contain_text(" off", timeout=RUN_WAIT)
        settle(page)
        off = int((scales == 0).sum())
        assert off > 0, "the mask rule finds no background prototype in the demo"
        intervention = page.get_by_text("Intervention:").inner_text()
        assert intervention.count(" off") == off, intervention
        assert metric_value(page, "Worst group before") == f"{100 * before:.1f} %"
        assert metric_value(page, "Worst group after") == f"{100 * after:.1f} %"

        name = page.get_by_role("textbox", name="New run name")
        name.fill("shortcut-edited")
        name.press("Enter")
        settle(page)
        page.get_by_role("button", name="Save as a new run").click()
        page.get_by_test_id("stAlert").filter(has_text="Saved as run “shortcut-edited”").wait_for(timeout=WAIT)
        from protolib.runs import load_run

        saved = [p for p in server["runs"].rglob("shortcut-edited") if (p / "manifest.json").is_file()]
        assert len(saved) == 1
        assert torch.equal(load_run(saved[0]).scale, scales)

        # -- the other edit: reset, then keep only where the object parts are (an edit of the pooling) ----------
        page.get_by_role("button", name="Reset all").click()
        settle(page)
        page.get_by_role("button", name="Keep only where the object parts are").click()
        expect(page.get_by_text("Edit in space (the model's pooling, not its head)")).to_be_visible(timeout=RUN_WAIT)
        settle(page)
        kept = expected_kept_worst_group(run_path, data, server["cache"], scales)
        assert metric_value(page, "Worst group after") == f"{100 * kept:.1f} %"
        assert kept > before  # the repair is real: the pooling, not a weight, changed
        assert page.get_by_test_id("stException").count() == 0
