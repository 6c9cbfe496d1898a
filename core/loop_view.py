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
from core.registry import get_model
from core.retrain_jobs import counterfactual_predictions, get_job
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
                + (f", p = {look['p_sequential']:.3g}" if look.get("p_sequential") is not None else ""), "A/B Tests")
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
        if (last := _last_decided(symbol, db)) is not None:  # what the loop's last decision was worth since
            state = state[0], f"{state[1]}; {last}", state[2]
        rows.append({"ticker": symbol, "loop state": state[0], "detail": state[1], "act on": state[2],
                     "page": PAGES[state[2]], "model": model_id})
    return pd.DataFrame(rows, columns=["ticker", "loop state", "detail", "act on", "page", "model"])


# --- what the loop's decisions were worth afterwards ------------------------------------------------------

AFTER_DAYS = 60  # trading days after a decision over which its worth is measured
FINAL = ("validating", "validated", "rolled_back", "archived", "rejected", "superseded", "awaiting_deploy")


def _mae(frame: pd.DataFrame) -> float:
    return float((frame["predicted_close"] - frame["actual_close"]).abs().mean())


def decision_worth(job_id: int, end, db: sqlite_utils.Database | None = None) -> dict:
    """One loop (retrain job): trigger day, how far it went and, once decided, what the decision was worth on
    the (up to AFTER_DAYS) trading days after it whose close is known by `end`: the MAE of the model kept or
    deployed vs the other one, both scored the same way (`counterfactual_predictions`, the serving path's
    arithmetic, out of sample for both: the days follow both models' training) on the same days, and naive's.
    `worth $` > 0: the decision lowered the error. For an archived or rejected challenger that is its
    shadow MAE vs the champion's; for a deployed one, its live MAE vs the model it replaced."""
    db = db or get_db()
    job = get_job(job_id, db=db)
    details, challenger_id, champion_id = job["details"], job["challenger_id"], job["model_id"]
    decided = details.get("decided_on") or details.get("deployed_as_of") or details.get("as_of")
    row = {"job": job_id, "ticker": get_model(champion_id, db=db)["symbol"], "trigger": job["trigger"],
           "retrained on": details.get("as_of"), "status": job["status"], "decided on": decided,
           "decision": job["decision"], "champion": champion_id, "challenger": challenger_id}
    if challenger_id and job["status"] in FINAL:
        days = load_prices(row["ticker"], start=decided, end=end, db=db).index
        days = days[(days > pd.Timestamp(decided)) & (days < pd.Timestamp(end))][:AFTER_DAYS]  # actuals known by `end`
        if len(days):
            old, new = counterfactual_predictions(champion_id, days, db=db), counterfactual_predictions(challenger_id, days, db=db)
            kept_new = job["status"] in ("validating", "validated")
            row.update({"days after": len(days), "after from": _day(days[0]), "after to": _day(days[-1]),
                        "champion MAE $": _mae(old), "challenger MAE $": _mae(new),
                        "naive MAE $": float((old["last_close"] - old["actual_close"]).abs().mean()),
                        "worth $": (_mae(old) - _mae(new)) if kept_new else (_mae(new) - _mae(old))})
    return row


def decisions_worth(start, end, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """`decision_worth` of each loop started in [start, end] (`scheduled_tasks.py --replay` prints it)."""
    db = db or get_db()
    jobs = db.execute(
        "SELECT j.id FROM retrain_jobs j WHERE j.status NOT IN ('blocked', 'declined', 'awaiting_approval') AND "
        "json_extract(j.details_json, '$.as_of') BETWEEN ? AND ? ORDER BY j.id", [_day(start), _day(end)]).fetchall()
    return pd.DataFrame([decision_worth(job_id, end, db=db) for (job_id,) in jobs])


def worth_in_words(row: dict) -> str | None:
    """The worth of a decided loop in one sentence (None before it has days after it)."""
    days = row.get("days after")
    if days is None or pd.isna(days):  # a row of a frame: NaN where another loop had days after and this one not
        return None
    kept = "deployed" if row["status"] in ("validating", "validated") else "kept the champion"
    return (f"on the {int(days)} trading days after {row['decided on']} ({row['after from']} to {row['after to']}): "
            f"challenger {row['challenger']} MAE ${row['challenger MAE $']:.3f}, champion {row['champion']} "
            f"${row['champion MAE $']:.3f}, naive ${row['naive MAE $']:.3f}; the decision ({kept}) was worth "
            f"${row['worth $']:+.3f} per day")


def _last_decided(symbol: str, db: sqlite_utils.Database) -> str | None:
    """The latest decided loop of `symbol` with what it was worth since, up to the data's last day."""
    job = db.execute(
        "SELECT j.id FROM retrain_jobs j JOIN models m ON m.model_id = j.model_id WHERE m.symbol = ? AND "
        "j.challenger_id IS NOT NULL AND j.status IN ('validating', 'validated', 'rolled_back', 'archived') "
        "ORDER BY j.id DESC LIMIT 1", [symbol]).fetchone()
    if job is None:
        return None
    row = decision_worth(job[0], load_prices(symbol, db=db).index[-1], db=db)
    words = worth_in_words(row)
    return f"last loop: {row['challenger']} {row['status'].replace('_', ' ')} on {row['decided on']}" + (f"; {words}" if words else "")


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
    for (job_id, symbol) in db.execute(  # the loop that tested this model: what its decision was worth afterwards
            "SELECT j.id, m.symbol FROM retrain_jobs j JOIN models m ON m.model_id = j.challenger_id WHERE j.challenger_id = ? "
            f"AND j.status IN ({', '.join('?' * len(FINAL))}) ORDER BY j.id", [model_id, *FINAL]).fetchall():
        row = decision_worth(job_id, load_prices(symbol, db=db).index[-1], db=db)
        if (words := worth_in_words(row)) is not None:
            records.append({"at": f"{row['after to']} (data)", "step": "afterwards", "action": "decision_worth",
                            "by": "loop view", "evidence": words, "target": model_id})
    return pd.DataFrame(records, columns=["at", "step", "action", "by", "evidence", "target"])
