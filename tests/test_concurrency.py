"""Reliability: the daily cycle and the UI write paths (predict, deploy, experiment record) in separate processes.

For MLSA_CONCURRENCY_SECONDS (default 30) four processes write to one database at once. Every
write each process reports must be in the database exactly once, and none may fail with
"database is locked".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SECONDS = float(os.environ.get("MLSA_CONCURRENCY_SECONDS", "30"))

WORKER = r'''
import json, sys, time, traceback
role, seconds, out_path, experiment_id = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4])
import logging; logging.basicConfig(level=logging.ERROR)
from core.store import get_db
db = get_db()
days = {s: [r[0] for r in db.execute("SELECT DISTINCT as_of FROM predictions WHERE symbol = ? ORDER BY as_of", [s]).fetchall()]
        for s in ("AAPL", "MSFT")}
result = {"role": role, "ok": 0, "locked": 0, "errors": [], "ids": [], "recorded": 0, "refused": 0}
deadline = time.monotonic() + seconds
i = 0
while time.monotonic() < deadline:
    i += 1
    try:
        if role == "scheduler":
            from core.cycle import run_daily_cycle
            run_daily_cycle(days["MSFT"][-40 + (i % 40)], db=db)
        elif role == "predict":
            from core.predict import predict
            symbol = ("AAPL", "MSFT")[i % 2]
            # these days are logged already: a repeated request must return its row, never add one
            result["ids"].append(predict(symbol, days[symbol][-60 + (i % 60)], request_key=f"conc-predict-{i}", db=db).prediction_id)
        elif role == "deploy":
            from core.registry import deploy, deployed_model, list_models
            current = deployed_model("MSFT", db=db)["model_id"]
            other = [m["model_id"] for m in list_models("MSFT", db=db) if m["model_id"] != current and m["model_type"] in ("rf", "xgb")][0]
            deploy(other, actor="conc-deploy", reason="concurrency test", override=True, db=db)
            time.sleep(0.05)
        elif role == "experiment":
            from core.abtest import ExperimentError, get_experiment, record_prediction
            arm = get_experiment(experiment_id, db=db)["arms"][i % 2]
            try:  # one prediction per arm and day: the first per arm is stored, later ones are refused
                record_prediction(experiment_id, arm["model_id"], 100.0 + i, days["AAPL"][-1], last_close=100.0,
                                  request_key=f"conc-exp-{i}", db=db)
                result["recorded"] += 1
            except ExperimentError as exc:
                if "one prediction per arm and day" not in str(exc):
                    raise
                result["refused"] += 1
        result["ok"] += 1
    except Exception as exc:
        if "locked" in str(exc).lower() or "busy" in str(exc).lower():
            result["locked"] += 1
        if len(result["errors"]) < 5:
            result["errors"].append(traceback.format_exc()[-800:])
        else:
            result["errors"].append("...")
json.dump(result, open(out_path, "w"))
'''


@pytest.fixture()
def experiment_id(registry_copy):
    from core.abtest import create_experiment

    running = registry_copy.execute("SELECT id FROM experiments WHERE status = 'running' AND symbol = 'AAPL'").fetchone()
    if running:
        return int(running[0])
    arms = [(m["model_id"], 0.5) for m in registry_copy.query(
        "SELECT model_id FROM models WHERE symbol = 'AAPL' AND model_type IN ('rf', 'xgb') ORDER BY model_id")]
    day = registry_copy.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = 'AAPL'").fetchone()[0]
    return create_experiment("concurrency", "AAPL", arms, day, db=registry_copy)


def test_cycle_and_ui_writes_in_parallel_lose_nothing(registry_copy, experiment_id, tmp_path):
    db = registry_copy
    before = {
        "cycles": db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'daily_cycle'").fetchone()[0],
        "deploys": db.execute("SELECT COUNT(*) FROM audit_log WHERE action = 'deploy' AND actor = 'conc-deploy'").fetchone()[0],
    }
    roles = ("scheduler", "predict", "deploy", "experiment")
    processes = {
        role: subprocess.Popen([sys.executable, "-c", WORKER, role, str(SECONDS), str(tmp_path / f"{role}.json"), str(experiment_id)],
                               cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for role in roles
    }
    for role, process in processes.items():
        _, err = process.communicate(timeout=SECONDS + 300)
        assert process.returncode == 0, f"{role} crashed: {err[-2000:]}"
    results = {role: json.loads((tmp_path / f"{role}.json").read_text()) for role in roles}
    for role, result in results.items():
        assert result["locked"] == 0, f"{role}: 'database is locked' {result['locked']} times: {result['errors'][:2]}"
        assert result["errors"] == [], f"{role}: {result['errors'][:2]}"
        assert result["ok"] > 0, f"{role} wrote nothing in {SECONDS} s"

    count = lambda sql, *p: db.execute(sql, p).fetchone()[0]  # noqa: E731
    ids = sorted(set(results["predict"]["ids"]))
    assert len(ids) <= 120 and count(f"SELECT COUNT(*) FROM predictions WHERE id IN ({','.join('?' * len(ids))})", *ids) == len(ids)
    # a repeat never adds a row; a new row appears only for a new (day, model) pair: MSFT after the deploy
    # process switched its model, AAPL on days its finished shadow test had served through arms
    assert count("SELECT COUNT(*) FROM predictions p WHERE request_key LIKE 'conc-predict-%' AND EXISTS (SELECT 1 FROM "
                 "predictions q WHERE q.symbol = p.symbol AND q.as_of = p.as_of AND q.model_id = p.model_id "
                 "AND q.served = 1 AND q.id <> p.id AND q.experiment_id IS NULL)") == 0
    assert count("SELECT COUNT(*) FROM (SELECT 1 FROM predictions GROUP BY symbol, as_of, model_id, ifnull(experiment_id, -1), "
                 "ifnull(arm, ''), served HAVING COUNT(*) > 1)") == 0  # one row per request, also under concurrency
    assert count("SELECT COUNT(*) FROM predictions WHERE request_key LIKE 'conc-exp-%'") == results["experiment"]["recorded"] <= 2
    assert count("SELECT COUNT(*) FROM audit_log WHERE action = 'deploy' AND actor = 'conc-deploy'") \
        == before["deploys"] + results["deploy"]["ok"]
    assert count("SELECT COUNT(*) FROM audit_log WHERE action = 'daily_cycle'") == before["cycles"] + results["scheduler"]["ok"]
    for symbol in ("AAPL", "MSFT"):
        assert count("SELECT COUNT(*) FROM models WHERE symbol = ? AND status = 'deployed'", symbol) == 1
    assert count("SELECT COUNT(*) FROM (SELECT 1 FROM drift_checks GROUP BY model_id, as_of HAVING COUNT(*) > 1)") == 0
    assert count("SELECT COUNT(*) FROM (SELECT 1 FROM alerts GROUP BY dedup_key HAVING COUNT(*) > 1)") == 0
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
