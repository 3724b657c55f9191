"""Heavy jobs as the pages run them: one at a time on the server (a session waiting says its place in
line), a progress bar per stage, and the one-click demo a newcomer starts from.

Decompositions, probe fits and reports run in the background (``protolib.background``): the page that
starts one, or finds one of its workspace after a reload, follows it (``follow``) and uses its result
once it is over (``finished``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import streamlit as st

from pages.common import cache, navigation, state
from pages.common.sidebar import runs_by_name, select_run_path
from protolib import job_queue
from protolib.backbones import BackboneError
from protolib.background import BACKGROUND, RUNNING, Job, JobBusy
from protolib.data import DataError
from protolib.job_queue import ordinal
from protolib.pipeline import STAGES
from protolib.runs import RunError
from protolib.workspace import demo_run

STAGE_TEXT = {
    "features": ("Backbone features", "images"),
    "nmf": ("NMF part discovery", "classes"),
    "scaling": ("Scaling to the head", "classes"),
    "refinement": ("Refinement", "classes"),
}


@contextmanager
def queued(what: str) -> Iterator[None]:
    """Hold the server's job slot for the ``with`` block. While another session's job runs, the page says
    this one's place in line ("2nd in line") and waits; leaving the page gives the place up."""
    note = st.empty()

    def waiting(place: int) -> None:
        note.info(queue_message(what, place), icon=":material/hourglass_top:")

    with job_queue.JOBS.turn(waiting):
        note.empty()
        yield


def queue_message(what: str, place: int) -> str:
    return (
        f"The server runs one job at a time: your {what} is **{ordinal(place)} in line** and starts by itself "
        "when the ones before it finish."
    )


# -- jobs that outlive the page ----------------------------------------------------------------------
def start(kind: str, what: str, work, meta: dict | None = None) -> Job | None:
    """Start ``work(progress)`` in the background for this workspace; None (and a warning) when its last
    job of this kind is not over yet."""
    try:
        return BACKGROUND.start(state.workspace().session, kind, what, work, meta)
    except JobBusy as exc:
        st.warning(f"{str(exc).capitalize()}: it is shown below.", icon=":material/hourglass_top:")
        return None


def pending(kind: str) -> Job | None:
    """This workspace's job of this kind that a page should show: one waiting or running, or one over whose
    result no page has shown yet (it ended while nobody looked, e.g. during a reload)."""
    job = BACKGROUND.of(state.workspace().session, kind)
    return job if job is not None and not (job.over and job.collected) else None


def follow(job: Job, stages=(), texts: dict | None = None, poll: float = 0.3) -> Job:
    """Draw ``job``'s place in line, then a progress bar per stage (``stages``; without them, one bar for
    every stage), each named by ``texts`` (stage -> (title, unit); STAGE_TEXT by default), until it is over.
    The script run waits here; a reload or a click ends only the drawing: the job goes on, and the next
    run finds it again (``pending``)."""
    texts = STAGE_TEXT if texts is None else texts
    note, clock = st.empty(), st.empty()
    bars = {s: st.progress(0.0, text=f"{texts.get(s, (s,))[0]}: waiting") for s in stages}
    single = None if stages else st.progress(0.0, text=f"Your {job.what}: waiting")
    said = 0
    while True:
        over = job.over  # read first: the drawing below then shows at least everything done before
        if job.state != RUNNING and not over and job.place > 1:
            if job.place != said:
                note.info(queue_message(job.what, job.place), icon=":material/hourglass_top:")
                said = job.place
        elif said:
            note.empty()
            said = 0
        for stage, entry in list(job.progress.items()):
            title, unit = texts.get(stage, (stage, "items"))
            text = f"{title}: {entry['done']}/{entry['total']} {unit} · {entry['seconds']:.1f} s"
            share = min(entry["done"] / max(entry["total"], 1), 1.0)
            if stage in bars:
                bars[stage].progress(share, text=text)
            elif single is not None:
                single.progress(share, text=text)
        clock.caption(f"{time.time() - job.started:.0f} s since it was asked for")  # also where a reload stops it
        if over:
            return job
        time.sleep(poll)


def finished(job: Job) -> Job:
    """Mark ``job``'s result as shown (a page that finds it later need not show it again)."""
    job.collected = True
    return job


def stage_bars(stages=STAGES) -> tuple[Callable[[str, int, int], None], dict]:
    """A progress bar per stage of a decomposition: (the ``progress`` callback, the timings it fills)."""
    bars = {s: st.progress(0.0, text=f"{STAGE_TEXT[s][0]}: waiting") for s in stages}
    timings: dict = {}
    clock = {"mark": time.perf_counter()}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        entry = timings.setdefault(stage, {"begin": clock["mark"]})
        entry.update(done=done, total=total, seconds=now - entry["begin"])
        title, unit = STAGE_TEXT.get(stage, (stage, "items"))
        if stage in bars:
            bars[stage].progress(min(done / max(total, 1), 1.0), text=f"{title}: {done}/{total} {unit} · {entry['seconds']:.1f} s")
        if done >= total:
            clock["mark"] = now

    return progress, timings


# -- the demo --------------------------------------------------------------------------------------
def demo_offer() -> None:
    """While this session sees no run at all: one click builds the demo (shared by everyone once built)
    and opens its prototypes."""
    if runs_by_name():
        return
    demo = demo_run.DEMO
    with st.container(border=True):
        st.markdown("##### :material/rocket_launch: New here? Build the demo")
        st.caption(
            f"EfficientNet-Lite0 on the {demo.n_classes} classes of the sample photos, {demo.images_per_class} photos "
            f"each, k = {demo.k} prototypes per class: about a minute on a laptop CPU, then it opens on Prototypes. "
            "It is built once and shared with everyone on this server."
        )
        if st.button("Build the demo", type="primary", icon=":material/play_arrow:", key="build_demo"):
            build_and_open_demo(demo)


def build_and_open_demo(demo: demo_run.Demo) -> None:
    device = st.session_state.get("device") or "cpu"
    with st.status("Building the demo…", expanded=True) as status:
        progress, _ = stage_bars()
        started = time.perf_counter()
        try:
            with queued("demo"):
                backbone = cache.get_backbone(demo.backbone, None, device)
                path = demo_run.build_demo(backbone, state.workspace().runs_root, progress, demo)
        except (DataError, BackboneError, RunError, ValueError, OSError) as exc:
            status.update(label="The demo could not be built", state="error")
            st.error(state.workspace().redact(str(exc)), icon=":material/error:")
            return
        status.update(label=f"Demo ready in {time.perf_counter() - started:.0f} s", state="complete")
    select_run_path(path)
    st.switch_page(navigation.PROTOTYPES)
