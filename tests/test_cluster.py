"""The per-model work on a Dask cluster (core.cluster, MLSA_DASK_SCHEDULER): a real `distributed.LocalCluster`
(2 worker processes, 1 thread each) gives the same database rows as the in-process run, a worker killed
mid-task (SIGKILL of its process) is retried, and one killed every time is a named failure with nothing
of it written. One cluster per module; it is closed at the end."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
import cloudpickle  # noqa: E402  (a dependency of distributed)
import dask  # noqa: E402

from conftest import copy_registry  # noqa: E402
from core import cluster, drift, training  # noqa: E402
from core.cycle import run_daily_cycle  # noqa: E402
from core.store import get_db  # noqa: E402

REAL_DRIFT_REPORT = drift.report_from_inputs
REAL_TRAIN_MODEL = training.train_model
VOLATILE = {"id", "created_at", "logged_at", "at", "heartbeat_at", "finished_at", "latency_ms",
            "latency_p50", "latency_p95", "latency_p99", "seconds", "ran_on", "owner_pid", "owner_start"}


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster of 2 processes with 1 thread each; a task whose worker dies twice is given up (KilledWorker).
    Worker saturation 1.0: a worker holds only the task it runs, so a killed worker takes no queued bystander with
    it (the scheduler counts every task held by a dead worker as suspect; at the default 1.1 a second task was)."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.scheduler.worker-saturation": 1.0}):
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=50) as local:
            yield local.scheduler_address


@contextmanager
def cluster_tasks(address: str):
    """The names of the tasks the cluster ran during the block (the task key up to its unique suffix)."""
    names: list[str] = []
    with distributed.Client(address, set_as_default=False) as client:
        with distributed.get_task_stream(client=client) as stream:
            yield names
        names.extend(sorted({str(t["key"]).rsplit("-", 1)[0] for t in stream.data}))


def _plain(value):
    """Rows without what differs between two runs by nature (ids, timestamps, latencies, timings)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return _plain(json.loads(value))
        except ValueError:
            return value
    return value


def _state(db) -> dict:
    tables = ["predictions", "daily_metrics", "drift_checks", "alerts", "retrain_jobs", "drift_watch_state", "models"]
    # in content order: on a cluster the models' steps interleave (two passes), so rows are written in another order
    state = {t: sorted((_plain(dict(r)) for r in db.query(f"SELECT * FROM {t}")), key=lambda row: json.dumps(row, sort_keys=True, default=str))
             for t in tables}
    state["cycles"] = [_plain(r["details_json"]) for r in db.query(
        "SELECT details_json FROM audit_log WHERE action = 'daily_cycle' ORDER BY id")]
    return state


def _copies(tmp_path: Path) -> dict[str, dict[str, str]]:
    """Two private copies of the demo registry, "local" and "remote", made before either is changed."""
    return {name: copy_registry(tmp_path / name) for name in ("local", "remote")}


def _cycle(env: dict[str, str], monkeypatch, scheduler_address: str | None) -> tuple[dict, dict]:
    """One daily cycle on a copy (`env`) of the demo registry; (its summary, the database state after it)."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if scheduler_address:
        monkeypatch.setenv("MLSA_DASK_SCHEDULER", scheduler_address)
    else:
        monkeypatch.delenv("MLSA_DASK_SCHEDULER", raising=False)
    db = get_db()
    summary = run_daily_cycle(db=db)
    return summary, _state(db)


def _kill_own_worker_then_check(markers: Path, victim: str, kills: int, model: dict, *inputs):
    """On the worker: SIGKILL this worker process on the first `kills` attempts for `victim` (counted in files, so
    an attempt rescheduled on another worker sees them), then compute the real drift report."""
    if model["model_id"] == victim:
        for attempt in range(kills):
            try:
                os.close(os.open(markers / f"attempt-{attempt}", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            os.kill(os.getpid(), signal.SIGKILL)  # a real process death, mid-task
    return REAL_DRIFT_REPORT(model, *inputs)


@pytest.fixture()
def kill_worker(monkeypatch, tmp_path):
    """`kill_worker(victim, kills)`: the cycle's drift-check task for `victim` kills its own worker `kills` times.
    Sent by value (workers cannot import the tests); returns the folder of attempt markers."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    markers = tmp_path / "kills"
    markers.mkdir()

    def arm(victim: str, kills: int) -> Path:
        monkeypatch.setattr(drift, "report_from_inputs", partial(_kill_own_worker_then_check, markers, victim, kills))
        return markers
    yield arm
    cloudpickle.unregister_pickle_by_value(module)


def test_cycle_on_a_local_cluster_writes_what_the_in_process_cycle_writes(demo_registry, scheduler, tmp_path, monkeypatch):
    copies = _copies(tmp_path)
    local_summary, local_state = _cycle(copies["local"], monkeypatch, None)
    with cluster_tasks(scheduler) as ran:
        remote_summary, remote_state = _cycle(copies["remote"], monkeypatch, scheduler)

    day = remote_summary["as_of"]
    assert ran == sorted(f"drift-check {model_id} {day}" for model_id in demo_registry.values())
    assert local_summary["ran_on"] == "in process" and remote_summary["ran_on"] == f"dask {scheduler}"
    assert remote_summary["ok"] == len(demo_registry) and remote_summary["failed"] == 0
    assert [e["drift"] for e in remote_summary["models"]] == [e["drift"] for e in local_summary["models"]]
    new_checks = [r for r in remote_state["drift_checks"] if r["as_of"] == remote_summary["as_of"]]
    assert len(new_checks) == len(demo_registry)  # the cycle stored a check per model, on the driver
    assert remote_state == local_state


def test_a_worker_killed_mid_task_is_retried_and_the_cycle_is_unchanged(demo_registry, scheduler, kill_worker,
                                                                        tmp_path, monkeypatch):
    copies = _copies(tmp_path)
    _local_summary, local_state = _cycle(copies["local"], monkeypatch, None)
    markers = kill_worker(sorted(demo_registry.values())[0], kills=1)
    remote_summary, remote_state = _cycle(copies["remote"], monkeypatch, scheduler)

    assert (markers / "attempt-0").exists()  # the first attempt did run, and its worker died
    assert remote_summary["failed"] == 0
    assert remote_state == local_state


def test_a_task_whose_worker_dies_every_time_is_a_named_failure_with_nothing_written(
        demo_registry, scheduler, kill_worker, tmp_path, monkeypatch):
    victim = sorted(demo_registry.values())[0]
    copies = _copies(tmp_path)
    _local_summary, local_state = _cycle(copies["local"], monkeypatch, None)
    markers = kill_worker(victim, kills=5)
    remote_summary, remote_state = _cycle(copies["remote"], monkeypatch, scheduler)

    assert (markers / "attempt-1").exists() and not (markers / "attempt-2").exists()  # killed, retried once, given up
    entry = next(e for e in remote_summary["models"] if e["model_id"] == victim)
    assert entry["status"] == "failed" and entry["failed_steps"] == ["drift"]
    assert entry["errors"]["drift"].startswith(f"TaskFailed: task drift-check {victim}")
    assert "worker died" in entry["errors"]["drift"]
    day = remote_summary["as_of"]
    assert not [r for r in remote_state["drift_checks"] if r["model_id"] == victim and r["as_of"] == day]
    others = [e for e in remote_summary["models"] if e["model_id"] != victim]
    assert others and all(e["status"] == "ok" for e in others)
    assert ([r for r in remote_state["drift_checks"] if r["model_id"] != victim]
            == [r for r in local_state["drift_checks"] if r["model_id"] != victim])
    assert remote_state["predictions"] == local_state["predictions"]  # the forecast step ran and wrote once
    assert [m["errors"] for m in remote_state["cycles"][-1]["models"] if m["model_id"] == victim] == [entry["errors"]]


def test_an_unreachable_scheduler_is_refused_in_clear_words_before_any_model_runs(registry_copy, monkeypatch):
    counts = "SELECT (SELECT COUNT(*) FROM predictions), (SELECT COUNT(*) FROM drift_checks), " \
             "(SELECT COUNT(*) FROM daily_metrics), (SELECT COUNT(*) FROM audit_log WHERE action = 'daily_cycle')"
    before = registry_copy.execute(counts).fetchone()
    monkeypatch.setenv("MLSA_DASK_SCHEDULER", "tcp://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    with pytest.raises(cluster.ClusterUnavailable, match="tcp://127.0.0.1:9 .*did not answer.*unset MLSA_DASK_SCHEDULER"):
        run_daily_cycle(db=registry_copy)
    assert registry_copy.execute(counts).fetchone() == before


def test_the_scheduler_says_the_cluster_is_unavailable_and_exits_6(registry_copy, monkeypatch, capsys):
    import scheduled_tasks

    monkeypatch.setenv("MLSA_DASK_SCHEDULER", "tcp://127.0.0.1:9")
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    assert scheduled_tasks.main(["--once"]) == scheduled_tasks.EXIT_CLUSTER_UNAVAILABLE == 6
    assert "cluster unavailable: The Dask scheduler tcp://127.0.0.1:9" in capsys.readouterr().err
    assert "\n  6  MLSA_DASK_SCHEDULER names a Dask cluster" in scheduled_tasks.EXIT_CODES
    assert "| 6 | `MLSA_DASK_SCHEDULER` names a Dask cluster" in (Path(scheduled_tasks.__file__).parent / "README.md").read_text()


def test_task_settings_carry_no_secret(monkeypatch):
    monkeypatch.setenv("MLSA_SMTP_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("MLSA_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/token123")
    monkeypatch.setenv("MLSA_DRIFT_WINDOW_DAYS", "45")
    settings = cluster.task_settings()
    assert settings.smtp_password == "" and settings.slack_webhook_url == ""
    assert settings.drift_window_days == 45 and settings.smtp_port == cluster.get_settings().smtp_port


# --- training, certification and the demo build on the cluster ----------------------------------------------

LIGHT = {"n_estimators": 10, "max_depth": 3}


def _light_champion(symbol: str = "MSFT") -> tuple[str, str]:
    """A light deployed rf for `symbol` in the current database; (its id, a day 30 trading days after its training)."""
    from core.market import load_prices
    from core.registry import deploy, register
    from core.training import train_model

    days = load_prices(symbol, start="2012-01-01").index
    model_id = register(train_model(symbol, "rf", train_end=days[0], params=LIGHT), reason="test champion")
    deploy(model_id, actor="test", override=True, reason="test champion")
    return model_id, f"{days[30]:%Y-%m-%d}"


def _rounded(value):
    """`value` with every float to 12 significant digits: a forest's threaded predict sums its trees in any
    order, so two in-process runs already differ in the 16th digit."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def _use(monkeypatch, folder: Path, scheduler_address: str | None):
    monkeypatch.setenv("MLSA_DB_PATH", str(folder / "app.db"))
    monkeypatch.setenv("MLSA_MODELS_DIR", str(folder / "models"))
    if scheduler_address:
        monkeypatch.setenv("MLSA_DASK_SCHEDULER", scheduler_address)
    else:
        monkeypatch.delenv("MLSA_DASK_SCHEDULER", raising=False)
    return get_db()


def test_retrain_and_certification_on_the_cluster_give_the_in_process_results(scheduler, tmp_path, monkeypatch):
    from core import lifecycle
    from core.certification import certify, training_window
    from core.features import FEATURE_COLUMNS, check_feature_frame
    from core.registry import get_model, load_model

    outcomes, ran = {}, {}
    for name, address in (("local", None), ("remote", scheduler)):
        db = _use(monkeypatch, tmp_path / name, address)
        champion, day = _light_champion()
        champion_row = get_model(champion, db=db)
        with cluster_tasks(scheduler) as ran[name]:
            result = lifecycle.retrain_now("MSFT", day, actor="test")
            challenger = get_model(result["challenger_id"], db=db)
            certification = certify(champion, store=False, db=db)
        outcomes[name] = {
            "status": result["status"], "gate": result["gate"].to_dict(),
            "challenger": {k: challenger[k] for k in ("model_id", "train_start", "train_end", "metrics")},
            "challenger_predicts": load_model(challenger["model_id"], db=db).predict_returns(
                check_feature_frame(training_window(champion_row, db=db), FEATURE_COLUMNS)).tolist(),
            "checks": [(c.key, c.value, c.passed) for c in certification.checks if c.key != "latency_p95_ms"],
            "permutation": certification.extras["permutation"],
        }
    assert ran == {"local": [], "remote": [f"certify-refits {champion}", f"retrain {champion} {day}"]}
    assert _rounded(outcomes["remote"]) == _rounded(outcomes["local"])
    assert outcomes["local"]["challenger"]["metrics"]["mae"] > 0


def test_demo_training_on_the_cluster_registers_the_models_the_process_pool_trains(demo_registry, scheduler,
                                                                                   tmp_path, monkeypatch):
    from core.demo import build_demo
    from core.registry import list_models

    session = {m["model_id"]: m for m in list_models("AAPL")}
    _use(monkeypatch, tmp_path / "demo", scheduler)
    lines: list[str] = []
    with cluster_tasks(scheduler) as ran:
        build_demo(report=lines.append, symbols=["AAPL"], replay_days=30)
    built = {m["model_id"]: m for m in list_models("AAPL")}

    assert not [line for line in lines if "FAILED" in line], lines
    deployed = next(m["model_id"] for m in list_models("AAPL") if m["status"] == "deployed")
    assert {"train rf AAPL", "train xgb AAPL", f"certify-refits {deployed}"} <= set(ran)
    assert sorted(built) == sorted(session)
    def facts(model: dict) -> dict:
        """What training and certification decided; not when, nor how fast the serving path was that minute."""
        metrics = dict(model["metrics"])
        certification = metrics.pop("certification", None) or {}
        checks = [(c["key"], c["value"], c["passed"]) for c in certification.get("checks", []) if c["key"] != "latency_p95_ms"]
        return _rounded({**{k: model[k] for k in ("train_start", "train_end", "params", "status", "certified")},
                         "metrics": metrics, "checks": checks, "permutation": certification.get("permutation")})

    for model_id, model in built.items():
        assert facts(model) == facts(session[model_id]), model_id
    assert any(facts(model)["checks"] for model in built.values())  # the deployed one was certified


# --- bulk retraining ----------------------------------------------------------------------------------------

def _jobs_and_models(db) -> dict:
    """What a batch decided: the jobs (status, decision, challenger) and the models (rounded metrics)."""
    jobs = [{k: r[k] for k in ("model_id", "trigger", "status", "decision", "challenger_id")}
            for r in db.query("SELECT * FROM retrain_jobs ORDER BY id")]
    models = [{**{k: r[k] for k in ("model_id", "symbol", "status", "train_start", "train_end", "parent_id")},
               "metrics": json.loads(r["metrics_json"])} for r in db.query("SELECT * FROM models ORDER BY model_id")]
    return {"jobs": jobs, "models": models}


def _same(a, b) -> bool:
    """Equal, floats to 1e-9 relative: a forest's threaded predict (MLSA_TRAIN_THREADS > 1) sums its trees in any
    order, so two runs of one training differ in the last digits, and rounding to fixed digits can still split
    a value that sits on a rounding boundary."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-9,
                                                                                              abs_tol=1e-12)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_bulk_retrain_on_the_cluster_decides_what_the_in_process_batch_decides(scheduler, tmp_path, monkeypatch, capsys):
    import scheduled_tasks
    from core.bulk_retrain import retrain_all

    states, ran = {}, {}
    for name, address in (("local", None), ("remote", scheduler)):
        db = _use(monkeypatch, tmp_path / name, address)
        champions = {symbol: _light_champion(symbol) for symbol in ("AAPL", "MSFT")}
        day = champions["MSFT"][1]
        with cluster_tasks(scheduler) as ran[name]:
            if address is None:  # the scheduler's flag, in process; IBM has no deployed model: refused, exit 1
                code = scheduled_tasks.main(["--retrain-all", "MSFT", "aapl", "IBM", "--as-of", day])
                assert code == scheduled_tasks.EXIT_FAILED
                printed = capsys.readouterr().out
                assert "IBM: refused: No model is deployed for IBM" in printed
                assert "retrained 3 ticker(s) on in process:" in printed
            else:
                outcome = retrain_all(["MSFT", "AAPL"], day, actor="scheduler")
                assert outcome["ran_on"] == f"dask {scheduler}"
                assert [r["symbol"] for r in outcome["results"]] == ["AAPL", "MSFT"]
                assert all(r["status"] in ("validating", "testing", "rejected") for r in outcome["results"])
        states[name] = _jobs_and_models(db)
        assert db.execute("SELECT COUNT(*) FROM retrain_jobs WHERE status = 'running'").fetchone()[0] == 0

    assert ran["local"] == []
    assert ran["remote"] == sorted(f"retrain {champions[s][0]} {day}" for s in ("AAPL", "MSFT"))
    assert len(states["local"]["jobs"]) == 2 and all(j["challenger_id"] for j in states["local"]["jobs"])
    assert _same(states["remote"], states["local"]), (states["remote"], states["local"])


def _kill_own_worker_then_train(markers: Path, victim: str, kills: int, symbol: str, *args, **kwargs):
    """On the worker: SIGKILL this worker process on the first `kills` trainings of `victim`, then train for real."""
    if symbol == victim:
        for attempt in range(kills):
            try:
                os.close(os.open(markers / f"attempt-{attempt}", os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                continue
            os.kill(os.getpid(), signal.SIGKILL)
    return REAL_TRAIN_MODEL(symbol, *args, **kwargs)


def test_a_bulk_retrain_whose_worker_dies_every_time_fails_that_ticker_with_nothing_half_written(
        scheduler, tmp_path, monkeypatch):
    from core.bulk_retrain import retrain_all

    db = _use(monkeypatch, tmp_path / "killed", scheduler)
    champions = {symbol: _light_champion(symbol) for symbol in ("AAPL", "MSFT")}
    models_before = {r[0] for r in db.execute("SELECT model_id FROM models")}
    markers = tmp_path / "kills"
    markers.mkdir()
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        monkeypatch.setattr(training, "train_model", partial(_kill_own_worker_then_train, markers, "AAPL", 5))
        outcome = retrain_all(None, champions["MSFT"][1], actor="scheduler")
    finally:
        cloudpickle.unregister_pickle_by_value(module)

    assert (markers / "attempt-1").exists() and not (markers / "attempt-2").exists()  # killed, retried once, given up
    results = {r["symbol"]: r for r in outcome["results"]}
    assert results["AAPL"]["status"] == "failed" and results["AAPL"]["challenger_id"] is None
    assert results["AAPL"]["decision"].startswith(f"Retraining AAPL failed: task retrain {champions['AAPL'][0]} ")
    assert "worker died" in results["AAPL"]["decision"] and "The deployed model was not changed" in results["AAPL"]["decision"]
    job = db.execute("SELECT status, decision, challenger_id, finished_at FROM retrain_jobs WHERE id = ?",
                     [results["AAPL"]["job_id"]]).fetchone()
    assert job[0] == "failed" and "worker died" in job[1] and job[2] is None and job[3]
    assert db.execute("SELECT COUNT(*) FROM retrain_jobs WHERE status = 'running'").fetchone()[0] == 0
    new_models = {r[0]: r[1] for r in db.execute("SELECT model_id, symbol FROM models")
                  if r[0] not in models_before}
    assert list(new_models.values()) == ["MSFT"] == [s for s, r in results.items() if r["challenger_id"]]
    assert {p.name for p in (tmp_path / "killed" / "models").iterdir() if p.is_dir()} == models_before | set(new_models)
