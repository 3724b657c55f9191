"""Who is who without accounts (``protolib.identity``) and jobs that outlive the page
(``protolib.background``), without Streamlit: private links, folder names that reveal nothing, the
proxy's user header, forgetting a workspace, and a job found again by its workspace."""

from __future__ import annotations

import os
import stat
import threading
import time

import pytest

from protolib import background, config, identity, job_queue
from protolib.job_queue import JobQueue
from protolib.workspace import Workspace
from protolib.workspace.cleanup import clean_up
from tests.helpers import wait_until


@pytest.fixture
def roots(tmp_path):
    identity._SECRETS.clear()  # one secret per runs folder, read once per process
    return tmp_path / "runs", tmp_path / "uploads"


def test_a_token_is_long_random_and_checked_strictly():
    tokens = {identity.new_token() for _ in range(200)}
    assert len(tokens) == 200 and all(identity.valid_token(t) for t in tokens)
    token = next(iter(tokens))
    assert len(token) == 43
    for bad in [
        "",
        token[:-1],
        token + "A",
        token[:-1] + "=",
        token[:-1] + "/",
        token[:-1] + "é",
        "../" + token[3:],
        token[:-1] + "\n",
        None,
        42,
    ]:
        assert not identity.valid_token(bad), bad


def test_folder_names_come_from_the_token_and_reveal_nothing(roots):
    runs, uploads = roots
    first = identity.identify(runs, uploads)
    token = first.token
    assert first.fresh and identity.valid_token(token)
    again = identity.identify(runs, uploads, token=token)
    assert not again.fresh and again.workspace == first.workspace  # a reload finds the same folders
    ws = first.workspace
    assert ws.session != ws.upload_id and len(ws.session) == len(ws.upload_id) == 32
    every_name = [p.name for p in runs.rglob("*")] + [p.name for p in uploads.rglob("*")]
    assert all(token not in name for name in every_name)
    assert token not in ws.session + ws.upload_id
    # the secret is the server's alone, made with owner-only permissions
    secret = runs / identity.SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and token not in secret.read_text()
    # the same token under another server's secret names other folders
    identity._SECRETS.clear()
    secret.unlink()
    assert identity.workspace_for(runs, uploads, "link", token) != ws


def test_a_malformed_unknown_or_forgotten_token_starts_a_fresh_workspace(roots):
    runs, uploads = roots
    mine = identity.identify(runs, uploads)
    for bad in ["x" * 10, mine.token[:-1] + "!", identity.new_token()]:  # malformed, malformed, never issued
        other = identity.identify(runs, uploads, token=bad)
        assert other.fresh and other.token not in (bad, mine.token) and other.workspace != mine.workspace
    mine.workspace.uploads.mkdir(parents=True)
    (mine.workspace.uploads / "photo.jpg").write_bytes(b"x")
    (mine.workspace.private_runs / "my-run").mkdir()
    mine.workspace.forget()
    assert not mine.workspace.private_runs.exists() and not mine.workspace.uploads.exists()
    after = identity.identify(runs, uploads, token=mine.token)  # the old link opens nothing any more
    assert after.fresh and after.token != mine.token and after.workspace != mine.workspace
    assert not mine.workspace.private_runs.exists()


def test_a_link_cleaned_up_by_age_starts_afresh_and_one_in_use_is_kept(roots):
    runs, uploads = roots
    idle, used = identity.identify(runs, uploads), identity.identify(runs, uploads)
    later = time.time() + 3 * 3600
    used.workspace.touch()
    os.utime(used.workspace.private_runs, (later, later))  # used an hour before the clean-up below
    removed = clean_up(runs, uploads, max_age=2.5 * 3600, now=later + 3600)
    assert idle.workspace.private_runs in removed and used.workspace.private_runs not in removed
    assert identity.identify(runs, uploads, token=used.token).workspace == used.workspace
    assert identity.identify(runs, uploads, token=idle.token).token != idle.token


def test_the_proxy_user_decides_only_when_the_header_is_configured(roots):
    runs, uploads = roots
    header = config.user_header({config.USER_HEADER_ENV: "X-Forwarded-User"})
    assert header == "X-Forwarded-User"
    assert config.user_header({}) is None
    with pytest.raises(config.ConfigError, match="PROTOLIB_USER_HEADER"):
        config.user_header({config.USER_HEADER_ENV: "X User: a"})
    alice = identity.identify(runs, uploads, user="alice", user_header=header)
    assert alice.by_proxy and alice.token is None and alice.fresh
    again = identity.identify(runs, uploads, token=identity.new_token(), user="alice", user_header=header)
    assert again.workspace == alice.workspace and not again.fresh  # any device, any link: the same workspace
    bob = identity.identify(runs, uploads, user="bob", user_header=header)
    assert bob.workspace != alice.workspace
    assert "alice" not in alice.workspace.session + alice.workspace.upload_id
    # the header without the setting changes nothing: a private link as for anyone
    unset = identity.identify(runs, uploads, user="alice", user_header=None)
    assert not unset.by_proxy and unset.workspace != alice.workspace
    # a header that is not a name: a private link too
    for bad in ["", "   ", "a\nb", "x" * 300]:
        assert not identity.identify(runs, uploads, user=bad, user_header=header).by_proxy
    # the user's name and a link's token never name the same folders
    link = identity.identify(runs, uploads)
    assert identity.workspace_for(runs, uploads, "user", link.token) != link.workspace


def test_two_processes_agree_on_one_secret(roots):
    runs, _ = roots
    found = []

    def read():
        found.append(identity.server_secret(runs))

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    identity._SECRETS.clear()
    assert len(set(found)) == 1 and identity.server_secret(runs) == found[0] and len(found[0]) == 32
    assert [p.name for p in runs.iterdir()] == [identity.SECRET_FILE]  # no temporary file left behind
    (runs / identity.SECRET_FILE).write_text("not hex")
    identity._SECRETS.clear()
    with pytest.raises(identity.IdentityError, match="malformed"):
        identity.server_secret(runs)


# -- jobs that outlive the page --------------------------------------------------------------------------
def test_a_job_goes_on_without_its_page_and_is_found_by_its_workspace(monkeypatch, tmp_path):
    monkeypatch.setattr(job_queue, "JOBS", JobQueue(1))
    jobs = background.BackgroundJobs()
    a, b = Workspace.new({"PROTOLIB_RUNS": str(tmp_path)}), Workspace.new({"PROTOLIB_RUNS": str(tmp_path)})
    hold = threading.Event()

    def work(progress):
        for i in range(3):
            progress("features", i + 1, 3)
        hold.wait(10)
        return {"run": "r"}

    job = jobs.start(a.session, "decomposition", "decomposition", work)
    wait_until(lambda: job.progress.get("features", {}).get("done") == 3, "the job to report its features")
    assert job.state == background.RUNNING and job.progress["features"]["total"] == 3
    with pytest.raises(background.JobBusy):
        jobs.start(a.session, "decomposition", "decomposition", work)
    assert jobs.of(a.session, "decomposition") is job and jobs.active(a.session) == [job]
    assert jobs.of(b.session, "decomposition") is None and jobs.active(b.session) == []
    # a second job waits its turn in the server's one queue and knows its place
    second = jobs.start(b.session, "report", "report", lambda progress: 1 / 0)
    wait_until(lambda: second.place == 2, "the second job to be 2nd in line")
    assert second.place == 2 and second.state == background.WAITING
    hold.set()
    assert job.wait(10) and job.state == background.DONE and job.result == {"run": "r"}
    assert second.wait(10) and second.state == background.FAILED and "division by zero" in second.error
    jobs.forget(a.session)
    assert jobs.of(a.session, "decomposition") is None and jobs.of(b.session, "report") is second


def test_forgetting_a_workspace_stops_its_jobs_before_they_save(monkeypatch, tmp_path):
    monkeypatch.setattr(job_queue, "JOBS", JobQueue(1))
    jobs, step, saved = background.BackgroundJobs(), threading.Event(), []

    def work(progress):
        progress("features", 1, 2)
        step.wait(10)
        progress("features", 2, 2)  # the first report after the workspace was forgotten stops the job
        saved.append("run")

    running = jobs.start("a", "decomposition", "decomposition", work)
    waiting = jobs.start("a", "report", "report", lambda progress: saved.append("report"))
    wait_until(lambda: running.state == background.RUNNING and waiting.place == 2, "one job running and one waiting")
    jobs.forget("a")
    step.set()
    assert running.wait(10) and running.state == background.FAILED and "cancelled" in running.error
    assert waiting.wait(10) and waiting.state == background.FAILED and "cancelled" in waiting.error
    assert saved == [] and len(job_queue.JOBS) == 0 and jobs.active("a") == []
