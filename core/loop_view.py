"""Where the loop stands (read-only): per ticker its state with the page that acts on it, and one model's timeline.

The loop is drift -> retrain -> gate -> shadow A/B test -> deployed -> watched -> (rolled back). Its
state lives in `retrain_jobs` (`core.retrain_jobs`, the owner) and the latest drift check; a model's
timeline is read from the one audit trail (`audit_log`), which every step writes.
"""
from __future__ import annotations

import json

import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.market import MarketDataError, load_prices
from core.store import get_db

PAGES = {"Model Management": "pages/2_Model_Management.py", "Drift": "pages/3_Drift.py",
         "A/B Tests": "pages/4_AB_Tests.py", "Monitoring": "pages/6_Monitoring.py"}
STATES = ("healthy", "drift alarm", "retraining", "challenger in test", "awaiting approval", "deployed, watched",
          "rolled back")


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def _watch_end(symbol: str, deployed_as_of: str, db: sqlite_utils.Database) -> str:
    """The day the validation window closes: its last trading day in the data, or how many are still to come."""
    window = get_settings().validation_window_days
    try:
        after = load_prices(symbol, start=deployed_as_of, db=db).index
    except MarketDataError:
        return f"{window} trading days after {deployed_as_of}"
    after = after[after > pd.Timestamp(deployed_as_of)]
    # the window holds the deploy day and the next ones; it closes once `window` of them have their next close
    return _day(after[window - 1]) if len(after) >= window else f"{window - len(after)} more trading day(s)"


def _job_state(job: dict, db: sqlite_utils.Database) -> tuple[str, str, str] | None:
    """(state, detail, page) for a ticker's latest loop job, or None when it says nothing about now."""
    details = json.loads(job["details_json"] or "{}")
    status, challenger = job["status"], job["challenger_id"]
    if status == "running":
        return "retraining", f"since {details.get('as_of', '?')} ({job['trigger']} trigger)", "Model Management"
    if status == "testing":
        look = details.get("last_look") or {}
        n, needed = look.get("n", 0), look.get("min_samples", get_settings().challenger_min_samples)
        return ("challenger in test", f"{challenger} since {details.get('test_opened', '?')}: {n} of {needed} samples"
                + (f", p = {look['p_sequential']:.3g}" if "p_sequential" in look else ""), "A/B Tests")
    if status in ("awaiting_approval", "awaiting_deploy"):
        what = "deploy of the tested winner " + str(challenger) if status == "awaiting_deploy" else "retrain (critical drift)"
        return "awaiting approval", f"{what}, job {job['id']}", "Model Management"
    if status == "validating":
        deployed = details.get("deployed_as_of", "?")
        return ("deployed, watched", f"{challenger} deployed on {deployed}, watched until "
                f"{_watch_end(job['symbol'], deployed, db)}", "Monitoring")
    if status == "rolled_back":
        days = (details.get("window") or {}).get("days") or ["?"]
        return "rolled back", f"{challenger} rolled back after {days[-1]}: {job['decision']}", "Model Management"
    return None


def loop_states(db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Per ticker with a deployed model: the loop's state, since when / how far, and the page that acts on it."""
    db = db or get_db()
    rows = []
    deployed = db.execute("SELECT symbol, model_id FROM models WHERE status = 'deployed' AND model_type != 'direction' "
                          "ORDER BY symbol").fetchall()  # the loop (drift, retrain, challenger) is the price models'
    for symbol, model_id in deployed:
        job = next(iter(db.query(
            "SELECT j.id, j.status, j.trigger, j.challenger_id, j.decision, j.details_json, m.symbol FROM retrain_jobs j "
            "JOIN models m ON m.model_id = j.model_id WHERE m.symbol = ? AND j.status NOT IN ('blocked', 'declined') "
            "ORDER BY j.id DESC LIMIT 1", [symbol])), None)
        state = _job_state(job, db) if job else None
        if state is None:
            check = db.execute("SELECT as_of, severity, overall_drift FROM drift_checks WHERE model_id = ? "
                               "ORDER BY as_of DESC, id DESC LIMIT 1", [model_id]).fetchone()
            blocked = db.execute(
                "SELECT j.decision FROM retrain_jobs j JOIN models m ON m.model_id = j.model_id WHERE m.symbol = ? "
                "AND j.status = 'blocked' ORDER BY j.id DESC LIMIT 1", [symbol]).fetchone()
            if check and check[2] and blocked:  # the cycle wanted to retrain and a safeguard held: say which
                state = ("drift alarm", f"{check[1]} drift on {check[0]} ({model_id}); retraining held: {blocked[0]}",
                         "Model Management")
            elif check and check[2]:
                state = "drift alarm", f"{check[1]} drift on {check[0]} ({model_id})", "Drift"
            else:
                state = "healthy", f"{model_id}" + (f", last drift check {check[0]}" if check else ""), "Monitoring"
        rows.append({"ticker": symbol, "loop state": state[0], "detail": state[1], "act on": state[2],
                     "page": PAGES[state[2]], "model": model_id})
    return pd.DataFrame(rows, columns=["ticker", "loop state", "detail", "act on", "page", "model"])


# --- one model's timeline ---------------------------------------------------------------------------------

STEPS = {"register": "trained", "certify": "certified",
         "retrain_rejected": "gated", "retrain_testing": "gated, in test", "retrain_awaiting_deploy": "tested",
         "retrain_validating": "deployed", "retrain_validated": "watched", "retrain_rolled_back": "rolled back",
         "retrain_archived": "tested", "retrain_superseded": "superseded", "retrain_failed": "failed",
         "create_experiment": "test opened", "stop_experiment": "test stopped", "deploy": "deployed",
         "rollback": "restored", "rolled_back": "rolled back", "archive": "archived", "reject": "rejected"}


def _evidence(action: str, details: dict) -> str:
    """The decision's evidence in one line, from the audit record's own details."""
    if action == "register":
        return details.get("reason", "")
    if action == "certify":
        return "certified" if details.get("certified") else "not certified (failed a check)"
    if action.startswith("retrain_"):
        return details.get("decision", "")
    if action == "create_experiment":
        return f"{details.get('name', '')}: arms {details.get('arms')}, min {details.get('min_samples')} samples"
    if action == "stop_experiment":
        return (f"winner {details.get('winner') or 'none'} ({details.get('winner_model_id') or 'no model'}), "
                f"improvement {details.get('improvement_pct', float('nan')):.1f}%, n {details.get('n')}, "
                f"always-valid p {details.get('p_sequential')}")
    if action in ("deploy", "rollback", "rolled_back"):
        return details.get("reason", "") + (" (certification override)" if details.get("override") else "")
    return details.get("why") or ", ".join(f"{k}: {v}" for k, v in details.items() if k != "symbol")


def model_timeline(model_id: str, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Everything done with `model_id`, oldest first: trained, gated, tested, deployed, watched, rolled
    back..., each with its evidence, joined from the one audit trail (its own records, its retrain job's
    steps, and its A/B tests'): Model Management's audit tab."""
    db = db or get_db()
    experiments = [f"experiment:{r[0]}" for r in db.execute(
        "SELECT DISTINCT experiment_id FROM experiment_arms WHERE model_id = ?", [model_id]).fetchall()]
    rows = db.execute(
        "SELECT at, actor, action, target, details_json FROM audit_log WHERE target = ? "
        "OR (action LIKE 'retrain_%' AND json_extract(details_json, '$.challenger_id') = ?) "
        "OR target IN (SELECT value FROM json_each(?)) ORDER BY id", [model_id, model_id, json.dumps(experiments)]).fetchall()
    records = []
    for at, actor, action, target, details_json in rows:
        if action not in STEPS and target != model_id:
            continue
        details = json.loads(details_json or "{}")
        if action.startswith("retrain_") and details.get("challenger_id") != model_id:
            continue  # a job in which this model was the champion: it is its challenger's step
        records.append({"at": str(at)[:19].replace("T", " "), "step": STEPS.get(action, action), "action": action, "by": actor,
                        "evidence": _evidence(action, details), "target": target})
    return pd.DataFrame(records, columns=["at", "step", "action", "by", "evidence", "target"])
