"""Faults in the model lifecycle, with real processes, files and locks (no mocks of what is under test).

- a retrain SIGKILLed mid-training: the next cycle marks its job interrupted, the phantom job does not
  start a cooldown, and the registry stays consistent;
- an approved retrain SIGKILLed: the approval returns to the queue and can be retried;
- a registration SIGKILLed between writing its files and committing its row: the orphan folder is
  left alone while fresh (a registration in progress) and removed by reconcile once old;
- a second process deploys another model between a retrain's gate and its deploy: the retrain does
  not deploy (compare-and-swap) and says why;
- a validation-window rollback goes back to the champion it replaced and its records name it.
Training is replaced by a quick near-perfect challenger only where the test is about what happens
after the gate (so the gate passes); the SIGKILL test trains the real forest.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_challenger_worse

ROOT = Path(__file__).resolve().parent.parent
SYMBOL = "MSFT"
TIMEOUT = 240

NEAR_PERFECT_DEF = r'''
from core import training
_real_train = training.train_model
def _near_perfect(symbol, model_type, train_end=None, **kwargs):
    """A fast challenger whose walk-forward predictions miss by $0.001: the gate passes."""
    trained = _real_train(symbol, "naive", train_end=train_end)
    trained.validation = trained.validation.assign(predicted_close=trained.validation["actual_close"] - 0.001)
    return trained
'''
NEAR_PERFECT = NEAR_PERFECT_DEF + "training.train_model = _near_perfect\n"

RETRAIN_REAL = r'''
import sys
from core.lifecycle import register_with_artifacts
from core.retrain import retrain
retrain(sys.argv[1], sys.argv[2], trigger="drift", reason="fault test", actor="scheduler",
        progress=lambda fraction, text: print("STEP", text, flush=True), register_challenger=register_with_artifacts)
'''

APPROVE_AND_HANG = r'''
import sys, time
from core.lifecycle import approve
def progress(fraction, text):
    print("STEP", text, flush=True)
    time.sleep(3600)  # stays mid-training until killed
approve(int(sys.argv[1]), actor="reviewer", progress=progress)
'''

REGISTER_AND_HANG = r'''
import sys, time
from core import model_files, registry, training
_real_save = model_files.save_estimator
def save_then_hang(model_type, estimator, folder):
    path = _real_save(model_type, estimator, folder)
    print("WRITTEN", folder, flush=True)
    time.sleep(3600)  # files on disk, row not committed: killed here
    return path
model_files.save_estimator = save_then_hang
registry.register(training.train_model(sys.argv[1], "naive", train_end=sys.argv[2]))
'''

RETRAIN_PAUSED_AT_DEPLOY = NEAR_PERFECT + r'''
import pathlib, sys, time
from core.lifecycle import retrain_now
go = pathlib.Path(sys.argv[3])
def progress(fraction, text):
    if text.startswith("Deploying"):
        print("GATED", flush=True)
        while not go.exists():
            time.sleep(0.05)
result = retrain_now(sys.argv[1], sys.argv[2], actor="cas-test", progress=progress)
print("RESULT", result["status"], "|", result["decision"], flush=True)
'''

DEPLOY_OTHER = r'''
import sys
from core.registry import deploy
for model_id in sys.argv[1:]:
    deploy(model_id, actor="other-process", reason="deployed by another process meanwhile", override=True)
'''


@pytest.fixture(autouse=True)
def direct_deploy(monkeypatch):
    """These tests cover a retrain that deploys right after its gate (MLSA_CHALLENGER_AB_TEST=0, also in the
    processes they start); the challenger stage's shadow A/B test is tests/test_challenger.py's."""
    monkeypatch.setenv("MLSA_CHALLENGER_AB_TEST", "0")


def _spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(process: subprocess.Popen, prefix: str) -> str:
    """The child's first stdout line starting with `prefix` (fails with its stderr if it exits first)."""
    for line in process.stdout:
        if line.startswith(prefix):
            return line.strip()
    process.wait(timeout=TIMEOUT)
    pytest.fail(f"the child exited ({process.returncode}) before printing {prefix!r}: {process.stderr.read()[-2000:]}")


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=TIMEOUT)  # reaped: not a zombie
    assert process.returncode == -signal.SIGKILL


def _last_day(db, symbol: str = SYMBOL) -> str:
    return db.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = ?", [symbol]).fetchone()[0]


def _later_day(day: str, offset: int) -> str:
    from core.market import load_prices

    days = load_prices(SYMBOL, start=day).index
    return f"{days[offset]:%Y-%m-%d}"


def _job(db, job_id: int) -> dict:
    return dict(next(db.query("SELECT * FROM retrain_jobs WHERE id = ?", [job_id])))


def assert_consistent(db) -> None:
    """At most one deployed model per ticker, every row's artifact present with its hash, no orphan
    folder or temporary file, no job left running, and a sound database file."""
    from core.config import get_settings
    from core.model_files import file_sha256

    models_dir = Path(get_settings().models_dir)
    assert db.execute("SELECT symbol FROM models WHERE status = 'deployed' GROUP BY symbol HAVING COUNT(*) > 1").fetchall() == []
    rows = list(db.query("SELECT model_id, artifact_path, artifact_sha256 FROM models"))
    for row in rows:
        path = models_dir / row["artifact_path"]
        assert path.exists(), f"{row['model_id']}: {path} is missing"
        assert file_sha256(path) == row["artifact_sha256"], f"{row['model_id']}: hash differs"
    folders = {p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    assert folders <= {r["model_id"] for r in rows}, f"orphan folders: {folders - {r['model_id'] for r in rows}}"
    assert list(models_dir.glob("**/.tmp-*")) == []
    assert db.execute("SELECT COUNT(*) FROM retrain_jobs WHERE status = 'running'").fetchone()[0] == 0
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _stub_training_here(monkeypatch) -> None:
    """The same near-perfect challenger as NEAR_PERFECT, in this process."""
    from core import training

    namespace: dict = {}
    exec(NEAR_PERFECT_DEF, namespace)  # noqa: S102 - one definition for both processes
    monkeypatch.setattr(training, "train_model", namespace["_near_perfect"])


def test_retrain_killed_mid_training_is_interrupted_and_blocks_nothing(demo_registry, registry_copy, monkeypatch):
    from test_monitoring import FakeReport, install_fake_drift

    from core.cycle import run_daily_cycle

    db = registry_copy
    champion = demo_registry[SYMBOL]
    day = _last_day(db)
    models_before = {r[0] for r in db.execute("SELECT model_id FROM models").fetchall()}
    child = _spawn(RETRAIN_REAL, champion, day)
    _wait_for_line(child, "STEP Validating fold 2")  # the real forest is being fitted on fold 2 of 5
    job = db.execute("SELECT id FROM retrain_jobs WHERE status = 'running' AND owner_pid = ?", [child.pid]).fetchone()
    assert job, "the job row does not show the child running"
    _kill(child)
    job_id = job[0]
    assert _job(db, job_id)["status"] == "running"  # the phantom the kill left
    assert {r[0] for r in db.execute("SELECT model_id FROM models").fetchall()} == models_before  # killed before registering

    # the next daily cycle: reconcile first, then a drift trigger inside the cooldown window is not blocked
    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    monkeypatch.setenv("MLSA_RETRAIN_CONFIRMATIONS", "1")
    install_fake_drift(monkeypatch, lambda m, d: FakeReport(True, "significant", ["fake drift"], retrain=True)
                       if m == champion else FakeReport())
    _stub_training_here(monkeypatch)
    next_day = _later_day(day, 2)
    summary = run_daily_cycle(next_day, db=db)
    interrupted = _job(db, job_id)
    assert interrupted["status"] == "interrupted" and interrupted["finished_at"]
    assert f"pid {child.pid}" in interrupted["decision"] and "nothing was deployed" in interrupted["decision"]
    assert db.execute("SELECT actor FROM audit_log WHERE action = 'retrain_interrupted' AND target = ?",
                      [champion]).fetchone()[0] == "reconcile"
    decision = next(m["retrain"] for m in summary["models"] if m["model_id"] == champion)
    assert not decision.startswith("blocked"), decision
    assert decision.startswith(("validating", "rejected")), decision
    assert_consistent(db)


def test_interrupted_approval_returns_to_the_queue_and_can_be_retried(demo_registry, registry_copy, monkeypatch):
    from core.registry import deployed_model
    from core.retrain_jobs import approval_queue, create_job, reconcile
    from core.lifecycle import approve, auto_retrain

    db = registry_copy
    champion = demo_registry[SYMBOL]
    day = _last_day(db)
    job_id = create_job(db, champion, "drift", "awaiting_approval", "critical drift: waiting for approval",
                         {"as_of": day, "reason": "fake critical drift", "severity": "critical"}, finished=False)
    child = _spawn(APPROVE_AND_HANG, job_id)
    _wait_for_line(child, "STEP")
    assert _job(db, job_id)["status"] == "running" and _job(db, job_id)["owner_pid"] == child.pid
    assert approval_queue(db=db).empty  # taken: nobody else can approve it at the same time
    with pytest.raises(ValueError, match="not awaiting approval"):
        approve(job_id, db=db)
    _kill(child)

    lines = reconcile(db)
    assert len(lines) == 1 and f"job {job_id}" in lines[0]
    job = _job(db, job_id)
    assert job["status"] == "interrupted" and "Retry it on Model Management" in job["decision"]
    queue = approval_queue(db=db)
    assert queue["id"].tolist() == [job_id] and queue["status"].tolist() == ["interrupted"]
    assert reconcile(db) == []  # nothing left to repair
    # while it waits to be retried, a new critical trigger does not queue a second approval
    from test_monitoring import FakeReport, install_fake_drift

    install_fake_drift(monkeypatch)  # its should_retrain reads FakeReport.retrain
    monkeypatch.setenv("MLSA_ENABLE_AUTO_RETRAIN", "1")
    monkeypatch.setenv("MLSA_RETRAIN_CONFIRMATIONS", "1")
    blocked = auto_retrain(champion, _later_day(day, 1), FakeReport(True, "critical", ["x"], retrain=True), db=db)
    assert blocked == f"blocked: job {job_id} already awaits approval"

    _stub_training_here(monkeypatch)
    result = approve(job_id, actor="reviewer", db=db)  # the Retry
    assert result["status"] == "validating" and deployed_model(SYMBOL, db=db)["model_id"] == result["challenger_id"]
    assert _job(db, job_id)["status"] == "validating"
    assert_consistent(db)


def test_registration_killed_before_its_commit_leaves_an_orphan_that_reconcile_moves_aside(demo_registry, registry_copy):
    from core.config import get_settings
    from core.retrain_jobs import reconcile, reconcile_model_folders

    db = registry_copy
    child = _spawn(REGISTER_AND_HANG, SYMBOL, "2011-06-01")
    folder = Path(_wait_for_line(child, "WRITTEN").split(" ", 1)[1])
    assert folder.parent == Path(get_settings().models_dir) and any(folder.iterdir())
    assert reconcile_model_folders(db) == []  # fresh: a registration in progress (it holds the write lock)
    assert folder.exists()
    _kill(child)
    assert folder.exists() and db.execute("SELECT 1 FROM models WHERE model_id = ?", [folder.name]).fetchone() is None
    assert reconcile(db) == []  # still within the grace period
    old = time.time() - 3600
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (old, old))
    lines = reconcile(db)  # what the daily cycle and Model Management run
    assert len(lines) == 1 and folder.name in lines[0]
    assert not folder.exists()
    kept = list((folder.parent / ".orphaned").glob(f"{folder.name}-*"))
    assert len(kept) == 1 and any(kept[0].iterdir())  # moved aside, nothing lost
    assert db.execute("SELECT details_json FROM audit_log WHERE action = 'move_orphan_folder' AND target = ?",
                      [folder.name]).fetchone()
    assert_consistent(db)


def test_a_database_pointed_at_another_installations_models_moves_nothing(demo_registry, tmp_path, monkeypatch):
    """A fresh MLSA_DB_PATH beside an existing models folder: its folders are not orphans, they belong to
    another database. Reconcile must not touch them (this once deleted a whole registry's models)."""
    from core.config import get_settings
    from core.retrain_jobs import reconcile_model_folders
    from core.store import get_db

    models_dir = Path(get_settings().models_dir)
    before = sorted(p.name for p in models_dir.iterdir() if p.is_dir())
    monkeypatch.setenv("MLSA_DB_PATH", str(tmp_path / "other.db"))
    lines = reconcile_model_folders(get_db(), grace_seconds=0)  # every folder counts as old
    assert lines and "another database's models" in lines[0] and "nothing was moved" in lines[0]
    assert sorted(p.name for p in models_dir.iterdir() if p.is_dir()) == before


def test_deploy_is_a_compare_and_swap_against_the_gated_champion(demo_registry, registry_copy, tmp_path):
    from core.registry import deployed_model, get_model, list_models

    db = registry_copy
    champion = demo_registry[SYMBOL]
    other = next(m["model_id"] for m in list_models(SYMBOL, db=db) if m["model_id"] != champion)
    go = tmp_path / "go"
    retrainer = _spawn(RETRAIN_PAUSED_AT_DEPLOY, SYMBOL, _last_day(db), go)
    _wait_for_line(retrainer, "GATED")  # gated against `champion`, registered, about to deploy
    deployer = _spawn(DEPLOY_OTHER, other)
    assert deployer.wait(timeout=TIMEOUT) == 0, deployer.stderr.read()
    go.touch()
    result = _wait_for_line(retrainer, "RESULT")
    assert retrainer.wait(timeout=TIMEOUT) == 0, retrainer.stderr.read()

    expected = f"champion changed from {champion} to {other} during retraining; not deployed"
    assert result.startswith(f"RESULT superseded | {expected}"), result
    assert deployed_model(SYMBOL, db=db)["model_id"] == other  # the other process's choice stands
    job = dict(next(db.query("SELECT * FROM retrain_jobs ORDER BY id DESC LIMIT 1")))
    assert job["status"] == "superseded" and job["decision"].startswith(expected)
    assert get_model(job["challenger_id"], db=db)["status"] == "candidate"
    assert db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'deploy' AND target = ?",
                      [job["challenger_id"]]).fetchone()[0] == 0
    assert_consistent(db)


def test_validation_window_rollback_names_the_champion_it_went_back_to(demo_registry, registry_copy, monkeypatch):
    from core import lifecycle, retrain
    from core.registry import ChampionChanged, deployed_model, get_model, list_models, rollback

    db = registry_copy
    champion = demo_registry[SYMBOL]
    other = next(m["model_id"] for m in list_models(SYMBOL, db=db) if m["model_id"] != champion)
    _stub_training_here(monkeypatch)
    day = _last_day(db)
    challenger = lifecycle.retrain_now(SYMBOL, day, actor="test", db=db)["challenger_id"]
    # another process deploys `other`, then the challenger again: history champion, challenger, other, challenger
    deployer = _spawn(DEPLOY_OTHER, other, challenger)
    assert deployer.wait(timeout=TIMEOUT) == 0, deployer.stderr.read()
    assert deployed_model(SYMBOL, db=db)["model_id"] == challenger
    with pytest.raises(ChampionChanged):  # a rollback is a compare-and-swap too
        rollback(SYMBOL, expected_current=other, db=db)

    make_challenger_worse(monkeypatch, challenger)
    decision = retrain.check_validation_window(SYMBOL, _later_day(day, 8), db=db)
    assert decision.startswith("rolled back") and champion in decision
    assert deployed_model(SYMBOL, db=db)["model_id"] == champion  # the champion it replaced, not `other`
    assert get_model(other, db=db)["status"] == "archived"
    assert get_model(challenger, db=db)["status"] == "rolled_back"
    assert f"rolled back to {champion}" in get_model(challenger, db=db)["reason"]
    records = {r["action"]: r for r in db.query(
        "SELECT * FROM audit_log WHERE action IN ('rollback', 'rolled_back') ORDER BY id DESC LIMIT 2")}
    assert records["rollback"]["target"] == champion and records["rolled_back"]["target"] == challenger
    for record in records.values():
        details = json.loads(record["details_json"])
        assert details["restored"] == champion and details["rolled_back"] == challenger
        assert details["reason"].startswith("validation window: rolled back")
    assert_consistent(db)


def test_jobs_of_another_host_or_a_reused_pid_are_judged_by_heartbeat_and_process_identity(registry_copy):
    from core.retrain_jobs import JOB_STALE_SECONDS, reconcile_jobs
    from core.store import transaction, utc_now

    db = registry_copy
    long_ago = "2000-01-01T00:00:00.000000Z"
    me, here = os.getpid(), socket.gethostname()
    jobs = {
        "other host, silent": {"owner_pid": 4242, "owner_host": "another-host", "heartbeat_at": long_ago},
        "other host, alive": {"owner_pid": 4242, "owner_host": "another-host", "heartbeat_at": utc_now()},
        "this process": {"owner_pid": me, "owner_host": here, "owner_start": _start_of(me), "heartbeat_at": long_ago},
        "reused pid": {"owner_pid": me, "owner_host": here, "owner_start": "1", "heartbeat_at": utc_now()},
        "no owner (older app)": {"owner_pid": None, "owner_host": None, "heartbeat_at": None},
    }
    ids = {}
    with transaction(db):
        for name, owner in jobs.items():
            ids[name] = db["retrain_jobs"].insert({
                "model_id": "none", "trigger": "manual", "status": "running", "decision": name, "details_json": "{}",
                "created_at": long_ago, **owner}).last_pk
    lines = reconcile_jobs(db)
    status = {name: _job(db, job_id)["status"] for name, job_id in ids.items()}
    assert status == {"other host, silent": "interrupted", "other host, alive": "running", "this process": "running",
                      "reused pid": "interrupted", "no owner (older app)": "interrupted"}
    assert len(lines) == 3
    silent = _job(db, ids["other host, silent"])["decision"]
    assert "no heartbeat from pid 4242 on another-host" in silent and f"limit {JOB_STALE_SECONDS // 60}" in silent


def _start_of(pid: int) -> str | None:
    from core.retrain_jobs import _process_start

    return _process_start(pid)
