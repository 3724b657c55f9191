"""The app's gallery and page switches, server side, in a real app session (``streamlit.testing``).

A run of one class (tench, 48 training photos, k = 3) is decomposed first, so its features sit in
the disk cache as after any run. Then, in fresh sessions with Streamlit's in-memory caches cleared
(a restarted server):

- open the Prototypes page: its gallery page of 24 part maps, plus the prototype cards and each
  prototype's top photos; target <= 2 s for the gallery page;
- switch pages Decompose -> Prototypes -> Explain -> Intervene -> Evaluate -> Prototypes twice,
  counting backbone forward passes: after the first visit, none.

Baseline, side by side: the same 24 part maps with the backbone rerun on the photos (feature cache
off), i.e. what the gallery would cost without the run's cached features.

    .venv/bin/python bench/bench_gallery.py [--quick] [--repeats N]
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
from _common import REPO, machine_info, median, parser, table, timed

from protolib.backbones import Backbone, load_backbone
from protolib.data import load_image
from protolib.data.features import extract_features
from protolib.explain import part_map, upsample
from protolib.pipeline import run_decomposition
from protolib.runs import save_run

CLASS = "n01440764"  # tench
PAGES = ["pages/prototypes.py", "pages/explain.py", "pages/intervene.py", "pages/evaluate.py"]


def count_forwards() -> dict:
    """Counts every backbone forward pass in this process (the app runs in it under AppTest)."""
    calls = {"images": 0}
    original = Backbone.forward

    def counted(self, x):
        calls["images"] += len(x)
        return original(self, x)

    Backbone.forward = counted
    return calls


def app_session(run: str):
    """A new browser session on a freshly started server: Streamlit's caches empty, disk cache kept."""
    import streamlit as st
    import streamlit.testing.v1.app_test as app_test

    from pages.common import navigation

    app_test.PagesManager = navigation.app_test_pages_manager()
    st.cache_data.clear()
    st.cache_resource.clear()
    at = app_test.AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    at.session_state["run"] = run
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def step(at, action) -> float:
    seconds, _ = timed(lambda: action(at).run())
    assert not at.exception, [e.value for e in at.exception]
    return seconds


def gallery_baseline(backbone, paths: list[Path], head, position: int = 0) -> None:
    """The first gallery page with the backbone rerun: features of 24 photos, then their part maps."""
    features = extract_features(backbone, paths, cache_dir=False)
    presence = head.presence(features.feats, position)
    shown = [backbone.preprocessing.display_transform()(load_image(p)).permute(1, 2, 0).numpy() for p in paths]
    for maps, image in zip(presence, shown):
        part_map(upsample(maps, image.shape[:2]), image)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="sessions timed (default 3, quick 1)")
    args = p.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    per_class = 24 if args.quick else 48  # the gallery shows 24 per page
    print("machine:", machine_info())

    root = Path(tempfile.mkdtemp(prefix="protoscope-bench-gallery-"))
    os.environ.update(
        PROTOLIB_RUNS=str(root / "runs"),
        PROTOLIB_CACHE=str(args.cache),
        PROTOLIB_DATA=str(args.data),
        STREAMLIT_LOGGER_LEVEL="error",  # bare-mode notices, once per session
    )
    backbone = load_backbone()
    run = run_decomposition(backbone, args.data, classes=[CLASS], images_per_class=per_class, k=3, cache_dir=args.cache)
    save_run(run, root / "runs" / "gallery")
    head = run.head(backbone)
    first_page = [Path(p) for p in run.manifest["images"][CLASS][:24]]
    calls = count_forwards()

    rows, opened, baseline, switch_images = [], [], [], []
    for r in range(repeats):
        at = app_session("gallery")
        before = calls["images"]
        opened.append(step(at, lambda a: a.switch_page("pages/prototypes.py")))
        opened_images = calls["images"] - before
        for _ in range(2):  # the first round may compute what a page needs once (Explain's photo); the second may not
            before = calls["images"]
            for page in ["pages/decompose.py", *PAGES, "pages/prototypes.py"]:
                step(at, lambda a, page=page: a.switch_page(page))
            switch_images.append(calls["images"] - before)
        seconds, _ = timed(lambda: gallery_baseline(backbone, first_page, head))
        baseline.append(seconds)
        print(
            f"session {r + 1}/{repeats}: Prototypes opened in {opened[-1]:.2f} s "
            f"({opened_images} backbone images), baseline {seconds:.2f} s, switches: {switch_images[-2:]} images"
        )

    rows.append(
        [
            "Prototypes page opened (gallery page 1 of 24, cards, top photos)",
            f"{median(opened):.2f}",
            f"{min(opened):.2f}",
            "cached run features",
        ]
    )
    rows.append(
        ["baseline: 24 part maps with the backbone rerun", f"{median(baseline):.2f}", f"{min(baseline):.2f}", "features recomputed"]
    )
    print()
    print(table(["what", "median s", "best s", "features"], rows))
    print(f"\nopened / baseline (medians): {median(opened) / median(baseline):.2f}x")
    print(
        f"backbone images run during page switches, per round of 6 switches: {switch_images} "
        "(first round of each session, then the second)"
    )


if __name__ == "__main__":
    main()
