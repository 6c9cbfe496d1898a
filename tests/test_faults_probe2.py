"""Faults found by the second probe (issue 10 §2-3), each made for real: a model file chmod 000 read by a
process without CAP_DAC_OVERRIDE, a tampered A/B arm, a second process deploying between a confirmation
and its Confirm, a retrain SIGKILLed while writing its challenger's artifacts, the daily cycle on the
first days after training and inside a training window, and a browser that ignores SIGTERM.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from test_evidence import _break_artifact, _day_routed_to, _models
from test_faults_lifecycle import (NEAR_PERFECT, TIMEOUT, _kill, _last_day, _spawn, _wait_for_line,
                                   assert_consistent)
from test_faults_storage import _without_dac_override

ROOT = Path(__file__).resolve().parent.parent
SEPTEMBER = [f"2012-09-{d:02d}" for d in (4, 5, 6, 7, 10, 11, 12, 13, 14)]


@pytest.fixture(autouse=True)
def direct_deploy(monkeypatch):
    """These tests cover a retrain that deploys right after its gate (MLSA_CHALLENGER_AB_TEST=0, also in the
    processes they start); the challenger stage's shadow A/B test is tests/test_challenger.py's."""
    monkeypatch.setenv("MLSA_CHALLENGER_AB_TEST", "0")


def _artifact(model_id: str) -> Path:
    from core.config import get_settings
    from core.registry import get_model

    return Path(get_settings().models_dir) / get_model(model_id)["artifact_path"]


# --- 1. an unreadable model file is a ModelIntegrityError in words; a broken arm falls back -------------

UNREADABLE_CHILD = r'''
import sys
from core.registry import ModelIntegrityError, load_model
from core.predict import predict
try:
    load_model(sys.argv[1])
    print("LOADED")
except ModelIntegrityError as exc:
    print("INTEGRITY", exc)
served = predict("MSFT", sys.argv[2])  # routed to the unreadable arm B
print("SERVED", served.model_id, served.experiment_id, served.arm, served.prediction_id)
'''


def test_an_unreadable_model_file_is_named_and_a_broken_arm_falls_back(registry_copy, tmp_path):
    from core.abtest import create_experiment

    champion, other = _models("MSFT")
    experiment_id = create_experiment("unreadable arm", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04",
                                      duration_days=30)
    path = _artifact(other)
    path.chmod(0)
    day = _day_routed_to(experiment_id, 1, SEPTEMBER)
    try:
        child = subprocess.run(_without_dac_override([sys.executable, "-c", UNREADABLE_CHILD, other, day]),
                               cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        path.chmod(0o644)
    assert child.returncode == 0, child.stderr[-3000:]
    assert "PermissionError" not in child.stdout + child.stderr
    integrity = next(line for line in child.stdout.splitlines() if line.startswith("INTEGRITY"))
    assert str(path) in integrity and "permission denied" in integrity and "ls -l" in integrity, integrity
    served = next(line for line in child.stdout.splitlines() if line.startswith("SERVED")).split()
    assert served[1:4] == [champion, "None", "None"]  # the deployed model answered, outside the test
    alert = registry_copy.execute("SELECT message FROM alerts WHERE model_id = ? AND kind = 'experiment_arm_broken'",
                                  [other]).fetchone()
    assert alert and "permission denied" in alert[0]


def test_a_missing_model_folder_permission_is_an_integrity_error_too(registry_copy):
    """stat() fails on a folder without execute permission: also in words, never a raw OSError."""
    from core.registry import load_model

    champion, _other = _models("MSFT")
    folder = _artifact(champion).parent
    folder.chmod(0o600)  # no search permission: stat of the file inside fails with EACCES
    code = textwrap.dedent(f"""
        from core.registry import ModelIntegrityError, load_model
        try:
            load_model({champion!r})
        except ModelIntegrityError as exc:
            print("INTEGRITY", exc)
    """)
    try:
        child = subprocess.run(_without_dac_override([sys.executable, "-c", code]), cwd=ROOT, env=os.environ.copy(),
                               capture_output=True, text=True, timeout=TIMEOUT)
    finally:
        folder.chmod(0o755)
    assert child.stdout.startswith("INTEGRITY") and "permission denied" in child.stdout, child.stderr[-3000:]
    load_model(champion)  # readable again: loads


# --- 2. a broken arm's fallback row is the day's one served row in the test ----------------------------

def _key_routed_to(experiment_id: int, arm_index: int) -> str:
    from core.ab_stats import route_key

    return next(k for k in (f"other-client-{i}" for i in range(1000))
                if route_key(experiment_id, k, [0.5, 0.5]) == arm_index)


@pytest.mark.parametrize("first_arm", [1, 0], ids=["broken arm first", "working arm first"])
def test_one_served_row_per_day_in_a_test_whatever_the_route_with_a_broken_arm(registry_copy, first_arm):
    from core.abtest import create_experiment
    from core.metrics import compute_daily_metrics
    from core.predict import predict

    champion, other = _models("MSFT")
    experiment_id = create_experiment("fallback once", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04",
                                      duration_days=30)
    _break_artifact(other)
    day = SEPTEMBER[3]
    first = predict("MSFT", day, request_key=_key_routed_to(experiment_id, first_arm))
    second = predict("MSFT", day, request_key=_key_routed_to(experiment_id, 1 - first_arm))
    third = predict("MSFT", day)  # the default key, whichever arm it hashes to
    assert first.prediction_id == second.prediction_id == third.prediction_id
    served = registry_copy.execute("SELECT COUNT(*) FROM predictions WHERE symbol = 'MSFT' AND as_of = ? AND served = 1",
                                   [day]).fetchone()[0]
    assert served == 1
    metrics = compute_daily_metrics(day, SEPTEMBER[-1], [champion, other], db=registry_copy)
    assert metrics["n_predictions"].sum() == 1  # daily_metrics counts the day once


def test_rows_served_before_a_test_existed_do_not_stop_its_replay(registry_copy):
    """The fallback look-up counts only rows logged after the test was created: days the deployed model
    served before (the demo's replay) still get the test's own row."""
    from core.abtest import create_experiment
    from core.ab_replay import simulate

    champion, other = _models("MSFT")
    day = registry_copy.execute("SELECT MIN(as_of) FROM predictions WHERE symbol = 'MSFT' AND served = 1 "
                                "AND experiment_id IS NULL AND as_of >= '2012-03-01'").fetchone()[0]
    experiment_id = create_experiment("after the replay", "MSFT", [(champion, 0.5), (other, 0.5)], day, duration_days=10)
    assert simulate(experiment_id, day, day) == 1
    assert registry_copy.execute("SELECT COUNT(*) FROM predictions WHERE experiment_id = ? AND served = 1",
                                 [experiment_id]).fetchone()[0] == 1


# --- 3. Model Management's deploy / rollback compare-and-swap against what the person saw -------------

DEPLOY_AS = r'''
import sys
from core.registry import deploy
deploy(sys.argv[1], actor="other-session", reason="deployed in another browser tab", override=True)
'''


def _third_model(db) -> str:
    from core.registry import register
    from core.training import train_model

    return register(train_model("MSFT", "naive", train_end="2012-02-28", db=db), reason="a third model", db=db)


def test_confirm_deploy_refuses_when_another_session_deployed_meanwhile(registry_copy):
    from core import lifecycle
    from core.registry import ChampionChanged, deployed_model

    champion, other = _models("MSFT")
    third = _third_model(registry_copy)
    pending = {"action": "deploy", "model_id": other}
    assert lifecycle.pending_action(pending, db=registry_copy)[1] == champion
    child = _spawn(DEPLOY_AS, third)
    assert child.wait(timeout=TIMEOUT) == 0, child.stderr.read()
    assert lifecycle.pending_action(pending, db=registry_copy)[1] == champion  # the Confirm rerun shows the same
    with pytest.raises(ChampionChanged) as refused:
        lifecycle.confirm_action(pending, override=True, override_reason="test", db=registry_copy)
    message = str(refused.value)
    assert f"changed from {champion} to {third}" in message and "by other-session" in message, message
    assert deployed_model("MSFT", db=registry_copy)["model_id"] == third  # their choice stands
    # the panel now shows the new champion; a second Confirm acts on what the person sees
    assert lifecycle.pending_action(pending, db=registry_copy)[1] == third
    assert lifecycle.confirm_action(pending, override=True, override_reason="test", db=registry_copy) == \
        f"Deployed {other} (previous: {third})."


def test_confirm_rollback_refuses_when_another_session_deployed_meanwhile(registry_copy):
    from core import lifecycle
    from core.registry import ChampionChanged, deploy, deployed_model

    champion, other = _models("MSFT")
    deploy(other, override=True, reason="so that there is something to roll back to", db=registry_copy)
    third = _third_model(registry_copy)
    pending = {"action": "rollback", "symbol": "MSFT"}
    assert lifecycle.pending_action(pending, db=registry_copy)[1] == other
    child = _spawn(DEPLOY_AS, third)
    assert child.wait(timeout=TIMEOUT) == 0, child.stderr.read()
    with pytest.raises(ChampionChanged, match=f"changed from {other} to {third} \\(deployed by other-session"):
        lifecycle.confirm_action(pending, db=registry_copy)
    assert deployed_model("MSFT", db=registry_copy)["model_id"] == third
    assert registry_copy.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'rollback'").fetchone()[0] == 0
    assert lifecycle.pending_action(pending, db=registry_copy)[1] == third
    assert lifecycle.confirm_action(pending, db=registry_copy) == f"Deployed {other} (previous: {third})."
    assert champion != other


# --- 4. a retrain killed between registering its challenger and writing its artifacts --------------------

RETRAIN_KILLED_IN_ARTIFACTS = NEAR_PERFECT + r'''
import sys, time
from core import lifecycle
def hang(model_id, db=None, **_kwargs):
    print("ARTIFACTS", model_id, flush=True)
    time.sleep(3600)  # registered, artifacts not written: killed here
lifecycle.write_model_artifacts = hang
lifecycle.retrain_now(sys.argv[1], sys.argv[2], actor="kill-test")
'''


def test_a_retrain_killed_while_writing_artifacts_names_its_challenger_and_reconcile_finishes_them(registry_copy):
    from core import lifecycle
    from core.config import get_settings
    from core.model_files import MODEL_CARD
    from core.registry import get_model
    from core.retrain_jobs import reconcile

    db = registry_copy
    child = _spawn(RETRAIN_KILLED_IN_ARTIFACTS, "MSFT", _last_day(db))
    challenger = _wait_for_line(child, "ARTIFACTS").split()[1]
    _kill(child)
    job = dict(next(db.query("SELECT * FROM retrain_jobs ORDER BY id DESC LIMIT 1")))
    assert job["status"] == "running" and job["challenger_id"] == challenger  # recorded before the artifacts
    folder = Path(get_settings().models_dir) / challenger
    assert not (folder / MODEL_CARD).exists()

    lines = reconcile(db)  # as Model Management calls it: no callback, so it names what is incomplete
    assert any(f"Retrain job {job['id']}" in line and f"challenger {challenger} was registered" in line for line in lines)
    assert any(line.startswith(f"{challenger} is registered but its explainability artifacts") for line in lines), lines
    assert get_model(challenger, db=db)["status"] == "candidate"

    lines = reconcile(db, rewrite_artifacts=lifecycle.write_artifacts)  # as the daily cycle calls it
    assert lines == [f"{challenger}: its explainability artifacts were incomplete (their writing was interrupted); "
                     "written again."]
    assert (folder / MODEL_CARD).exists()
    assert reconcile(db, rewrite_artifacts=lifecycle.write_artifacts) == []
    assert_consistent(db)


# --- 5-6. the daily cycle: too early for drift is a skip; models inside their training window are named ---

def _trading_days_after(symbol: str, day: str, count: int) -> list[str]:
    from core.market import load_prices

    days = load_prices(symbol, start=day).index
    return [f"{d:%Y-%m-%d}" for d in days[days > day][:count]]


def test_drift_in_the_first_days_after_training_is_skipped_not_failed(registry_copy):
    from core.cycle import error_rates, run_daily_cycle
    from core.registry import deployed_model

    model = deployed_model("MSFT", db=registry_copy)
    days = _trading_days_after("MSFT", model["train_end"], 6)
    for n, day in enumerate(days[:2], start=1):
        summary = run_daily_cycle(day, symbols=["MSFT"], db=registry_copy)
        entry = summary["models"][0]
        assert summary["failed"] == 0 and entry["status"] == "ok" and "drift" not in entry["failed_steps"], entry
        assert entry["skipped_steps"] == {"drift": f"{n} of 5 days after training"}
    assert error_rates(days[5], db=registry_copy)[model["model_id"]] == 0.0
    summary = run_daily_cycle(days[4], symbols=["MSFT"], db=registry_copy)  # 5 days: the check runs
    assert summary["models"][0]["skipped_steps"] == {} and summary["models"][0]["drift"] is not None


def test_models_inside_their_training_window_are_listed_as_skipped_by_the_scheduler(registry_copy):
    from core.market import load_prices
    from core.registry import deployed_model

    models = [deployed_model(s, db=registry_copy) for s in ("AAPL", "MSFT")]
    day = f"{load_prices('MSFT', end='2012-02-01').index[-1]:%Y-%m-%d}"  # before both train_ends
    run = subprocess.run([sys.executable, "scheduled_tasks.py", "--once", "--as-of", day], cwd=ROOT,
                         env=os.environ.copy(), capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{day}: 0 ok, 0 failed, 2 skipped" in run.stdout, run.stdout
    for model in models:
        assert (f"{model['model_id']}: skipped, {day} is inside its training window (trained on the closes up to "
                f"{model['train_end']}); it runs from {model['train_end']}") in run.stdout


# --- 7. a render timeout kills the browser's process tree -------------------------------------------------

RENDER_CHILD = r'''
import time
import plotly.graph_objects as go
from core import figure_export
started = time.perf_counter()
try:
    figure_export.render_png(go.Figure(), timeout=4)
except figure_export.RenderUnavailable as exc:
    print("FELL BACK", round(time.perf_counter() - started, 1), exc, flush=True)
'''


def _live_processes_mentioning(mark: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if mark in cmdline and state not in ("Z", "X"):
            found.append(f"{proc.name}: {cmdline}")
    return found


def test_a_render_timeout_kills_a_browser_that_ignores_sigterm(tmp_path):
    mark = f"600.{uuid.uuid4().int % 10**9:09d}"  # a unique sleep, so only this test's processes are counted
    browser = tmp_path / "fake-chromium"
    browser.write_text(f"#!/bin/bash\ntrap '' TERM\nsleep {mark}\n")  # ignores SIGTERM, never answers
    browser.chmod(0o755)
    env = {**os.environ, "BROWSER_PATH": str(browser), "MLSA_RENDER_TIMEOUT_S": "4"}
    started = time.perf_counter()
    try:
        child = subprocess.run([sys.executable, "-c", RENDER_CHILD], cwd=ROOT, env=env, capture_output=True,
                               text=True, timeout=120)
        assert child.returncode == 0, child.stderr[-3000:]
        assert "FELL BACK" in child.stdout and "did not answer within 4 s" in child.stdout, child.stdout + child.stderr
        assert time.perf_counter() - started < 60
        assert "Task exception was never retrieved" not in child.stderr  # the abandoned render ends quietly
        deadline = time.monotonic() + 5
        while (left := _live_processes_mentioning(mark) + _live_processes_mentioning(str(browser))) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert left == [], f"still running after Python exited: {left}"
    finally:  # whatever a failing run left behind (the sleep first, so its parents can reap it)
        for line in _live_processes_mentioning(mark) + _live_processes_mentioning(str(browser)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
