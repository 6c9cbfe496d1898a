"""The daily cycle (orchestration): backfill, metrics, drift, alerts, retrain decision, forecast per deployed model.

`run_daily_cycle(as_of)` is what the scheduler runs: for every deployed model, each step isolated
so one failing model never stops the others, and one `audit_log` row per run (actor "scheduler",
action "daily_cycle") that the Home page reads through `last_cycle_run`; `cycle_history` and
`error_rates` read those rows back. `backfill_history` fills metrics and drift checks for the demo.
The retrain step registers challengers through `core.lifecycle` (artifacts written), passed down to
`core.retrain` as a callback.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import sqlite_utils

from core import drift, drift_watch, lifecycle
from core.alerts import deliver_pending, evaluate_model
from core.cluster import Executor, Handle, executor, task_settings
from core.config import get_settings
from core.drift import check_within_data, data_ends
from core.market import MarketDataError, PriceCache, load_prices
from core.metrics import METRICS_LOOKBACK_DAYS, upsert_daily_metrics
from core.predict import backfill_actuals, predict
from core.registry import get_model, list_models, model_kind
from core.retrain import check_validation_window
from core.retrain_jobs import reconcile
from core.store import audit, get_db, transaction

log = logging.getLogger(__name__)

STEPS = ("backfill", "watch", "metrics", "drift", "alerts", "retrain", "forecast")
ERROR_RATE_RUNS = 20  # cycle runs over which a model's step error rate is measured
StopCheck = Callable[[], bool]


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


# --- cycle history (audit_log) -------------------------------------------------------------------------

def _cycle_rows(db: sqlite_utils.Database, before: str | None = None, limit: int = 1) -> list[dict]:
    clause, params = ("AND json_extract(details_json, '$.as_of') < ?", [before]) if before else ("", [])
    rows = db.query(
        f"SELECT id, at, actor, details_json FROM audit_log WHERE action = 'daily_cycle' {clause} "
        "ORDER BY id DESC LIMIT ?", [*params, limit],
    )
    return [{**json.loads(r["details_json"]), "at": r["at"], "actor": r["actor"], "audit_id": r["id"]} for r in rows]


def last_cycle_run(db: sqlite_utils.Database | None = None) -> dict | None:
    """The last daily-cycle run: as_of, ok / failed model counts, seconds, `succeeded`, when; None if never run."""
    rows = _cycle_rows(db or get_db())
    if not rows:
        return None
    run = rows[0]
    return {**run, "succeeded": run.get("failed", 0) == 0 and not run.get("stopped", False)}


def cycle_history(limit: int = 500, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Daily-cycle runs, oldest first: as_of, ok, failed, seconds, and the share of failed steps.

    Counted by SQLite's JSON functions: a run's summary lists every model, so a year of 100-model runs is
    megabytes of JSON, too slow to parse in Python on each Monitoring load. A summary SQLite cannot read
    (a NaN written by Python's json) is parsed in Python."""
    rows = (db or get_db()).execute(
        "SELECT at, raw, json_extract(d, '$.as_of'), ifnull(json_extract(d, '$.ok'), 0), "
        "ifnull(json_extract(d, '$.failed'), 0), json_extract(d, '$.seconds'), "
        "(SELECT ifnull(SUM(json_extract(m.value, '$.steps_run')), 0) FROM json_each(d, '$.models') m), "
        "(SELECT ifnull(SUM(json_array_length(m.value, '$.failed_steps')), 0) FROM json_each(d, '$.models') m) "
        "FROM (SELECT id, at, CASE WHEN json_valid(details_json) THEN details_json ELSE '{}' END AS d, "
        "      CASE WHEN json_valid(details_json) THEN NULL ELSE details_json END AS raw "
        "      FROM audit_log WHERE action = 'daily_cycle' ORDER BY id DESC LIMIT ?) ORDER BY id", [limit]).fetchall()
    records = []
    for at, raw, as_of, ok, failed, seconds, steps, failed_steps in rows:
        if raw is not None:
            run = json.loads(raw)
            as_of, ok, failed, seconds = run.get("as_of"), run.get("ok", 0), run.get("failed", 0), run.get("seconds")
            steps = sum(m.get("steps_run", 0) for m in run.get("models", []))
            failed_steps = sum(len(m.get("failed_steps", [])) for m in run.get("models", []))
        records.append({"at": at, "as_of": as_of, "ok": ok, "failed": failed, "seconds": seconds,
                        "error_rate": failed_steps / steps if steps else 0.0})
    return pd.DataFrame(records, columns=["at", "as_of", "ok", "failed", "seconds", "error_rate"])


def error_rates(as_of, runs: int = ERROR_RATE_RUNS, db: sqlite_utils.Database | None = None) -> dict[str, float]:
    """Per model: failed steps / steps run over the last `runs` cycles before `as_of` (the "error rate")."""
    failed: dict[str, int] = {}
    total: dict[str, int] = {}
    for run in _cycle_rows(db or get_db(), before=_day(as_of), limit=runs):
        for entry in run.get("models", []):
            total[entry["model_id"]] = total.get(entry["model_id"], 0) + entry.get("steps_run", 0)
            failed[entry["model_id"]] = failed.get(entry["model_id"], 0) + len(entry.get("failed_steps", []))
    return {model_id: failed.get(model_id, 0) / n for model_id, n in total.items() if n}


# --- the daily cycle ----------------------------------------------------------------------------------

def _step_backfill(model: dict, day: str, context: dict, db: sqlite_utils.Database) -> str:
    if context.get("refresh_prices"):
        load_prices(model["symbol"], refresh=True, db=db)  # pull new closes (live scheduler only)
    return f"{backfill_actuals(day, symbol=model['symbol'], db=db)} actuals filled"


def _price_only(model: dict, what: str) -> None:
    """A step that exists for price models only skips a direction model, saying so (not a failure)."""
    if model_kind(model["model_type"]) != "price":
        raise StepSkipped(f"{what} cover price models; a direction model is scored by the metrics and drift steps")


def _watch_all(models: list[dict], model_days: dict[str, str], db: sqlite_utils.Database,
               prices: PriceCache | None = None) -> dict[str, Any]:
    """The sequential detectors of all the day's models advanced in one batched `drift_watch.update` per model day
    (normally one: one read per ticker, one vectorised step, one transaction). model_id -> days stored, or the
    exception of its batch: that model's watch step then runs alone, so one model's fault stops no other."""
    by_day: dict[str, list[str]] = {}
    for model in models:
        by_day.setdefault(model_days[model["model_id"]], []).append(model["model_id"])
    done: dict[str, Any] = {}
    for day, ids in by_day.items():
        try:
            stored = drift_watch.update(ids, day, db=db, cache=prices)
        except Exception as exc:  # noqa: BLE001 - each model retries alone in its own step, which reports the fault
            log.warning("%s: batched drift watch of %d models failed (%s); each runs alone", day, len(ids), exc)
            stored = {model_id: exc for model_id in ids}
        done.update({model_id: stored.get(model_id, 0) for model_id in ids})
    return done


def _step_watch(model: dict, day: str, context: dict, db: sqlite_utils.Database) -> str:
    """Hook (issue 13): the model's sequential detectors, advanced to the day by the cycle's batched update
    (`_watch_all`); alone (fits its profile the first time) when that batch failed or did not include it."""
    stored = context.get("watched", {}).get(model["model_id"])
    if stored is None or isinstance(stored, Exception):
        stored = drift_watch.update([model["model_id"]], day, db=db, cache=context["prices"]).get(model["model_id"], 0)
    return f"{stored} day(s) of sequential detectors stored"


def _step_metrics(model: dict, day: str, context: dict, db: sqlite_utils.Database) -> str:
    """Every model that logged predictions for this ticker in the lookback (A/B arms, shadows, a champion
    replaced this week), not only the deployed one: their late actuals must reach their metrics too."""
    start = pd.Timestamp(day) - pd.Timedelta(days=METRICS_LOOKBACK_DAYS)
    model_ids = [r[0] for r in db.execute(
        "SELECT DISTINCT model_id FROM predictions WHERE symbol = ? AND as_of >= ? AND as_of <= ?",
        [model["symbol"], f"{start:%Y-%m-%d}", day]).fetchall()] or [model["model_id"]]
    return f"{upsert_daily_metrics(start, day, model_ids, db=db)} metric rows"


class StepSkipped(Exception):
    """A step that cannot run yet on this day, which is not a failure (e.g. a drift check with fewer
    days after the model's training window than it needs): recorded as skipped, with the reason."""


def _days_after_training(model: dict, day: str, db: sqlite_utils.Database, cache: PriceCache | None = None) -> int:
    """Trading days after the model's train_end up to `day` (the drift check's current window)."""
    days = load_prices(model["symbol"], start=model["train_end"], end=day, db=db, cache=cache).index
    return int((days > pd.Timestamp(model["train_end"])).sum())


def _step_drift(model: dict, day: str, context: dict, db: sqlite_utils.Database) -> str:
    after = _days_after_training(model, day, db, context["prices"])
    if after < drift.MIN_SAMPLES:  # the first days after training, and after every automatic deploy
        raise StepSkipped(f"{after} of {drift.MIN_SAMPLES} days after training")
    stored = db.execute("SELECT 1 FROM drift_checks WHERE model_id = ? AND as_of = ? LIMIT 1",
                        [model["model_id"], day]).fetchone()
    on_cluster = {"computed": context["computed"]} if context.get("computed") else {}  # computed there; else here
    report = drift.check_model(model["model_id"], day, window_days=get_settings().drift_window_days, db=db,
                               store=stored is None, cache=context["prices"], **on_cluster)  # a day already checked is recomputed, never stored twice
    context["report"] = report
    return f"drift {report.severity}" + (" (already checked today)" if stored else "")


def _step_alerts(model: dict, day: str, context: dict, db: sqlite_utils.Database) -> str:
    raised = evaluate_model(model, day, context.get("report"), context.get("error_rate", 0.0), db=db)
    context["alerts"] = raised
    return f"{len(raised)} new alert(s)" + (f": {', '.join(raised)}" if raised else "")


def _step_retrain(model: dict, day: str, context: dict, db: sqlite_utils.Database) -> str:
    _price_only(model, "automatic retraining and challengers")
    tested = lifecycle.advance_challenger(model["symbol"], day, db=db)  # the open shadow test first: it may deploy
    window = check_validation_window(model["symbol"], day, db=db)
    report = context.get("report")
    if get_model(model["model_id"], db=db)["status"] != "deployed":  # its challenger was deployed just now
        decision = "no retrain decision: the model was replaced today"
    elif report is None:
        decision = "skipped: no drift report today"
    else:
        decision = lifecycle.auto_retrain(model["model_id"], day, report, db=db)
    context["retrain"] = "; ".join([decision, *([f"validation window: {window}"] if window else []),
                                    *([f"challenger: {tested}"] if tested else [])])
    return context["retrain"]


def _step_forecast(model: dict, day: str, context: dict, db: sqlite_utils.Database) -> str:
    trading_day = _day(load_prices(model["symbol"], end=day, db=db, cache=context["prices"]).index[-1])
    kind = model_kind(model["model_type"])  # a ticker's price and direction models each serve once a day
    served = db.execute("SELECT 1 FROM predictions WHERE symbol = ? AND as_of = ? AND served = 1 AND (p_up IS NULL) = ? "
                        "LIMIT 1", [model["symbol"], trading_day, int(kind == "price")]).fetchone()
    if served:
        return f"forecast for {trading_day} already logged"
    made = predict(model["symbol"], trading_day, db=db, kind=kind, cache=context["prices"])
    if "served_today" in context:  # a cluster run counts every model's forecast in one batch after the last model
        context["served_today"].append((trading_day, made.model_id, model["model_id"]))
    else:  # count it in today's metrics now, so a second run of the same day finds nothing new to add
        upsert_daily_metrics(trading_day, trading_day, [made.model_id], db=db)
    said = f"P(up) {made.p_up:.1%}" if made.p_up is not None else f"${made.predicted_close:.2f}"
    return f"forecast {made.target_date}: {said} by {made.model_id}"


STEP_FUNCTIONS: dict[str, Callable[[dict, str, dict, sqlite_utils.Database], str]] = {
    "backfill": _step_backfill, "watch": _step_watch, "metrics": _step_metrics, "drift": _step_drift,
    "alerts": _step_alerts, "retrain": _step_retrain, "forecast": _step_forecast,
}


def _run_model(model: dict, day: str, error_rate: float, refresh_prices: bool, should_stop: StopCheck | None,
               db: sqlite_utils.Database, watched: dict | None = None, prices: PriceCache | None = None) -> dict[str, Any]:
    """The steps of one model; `watched` is the cycle's batched detector update, `prices` its PriceCache (a new
    one when run alone)."""
    started = time.perf_counter()
    context: dict[str, Any] = {"error_rate": error_rate, "refresh_prices": refresh_prices, "watched": watched or {},
                               "prices": prices or PriceCache(db)}
    entry = _new_entry(model)
    _run_steps(STEPS, model, day, context, entry, should_stop, db)
    return _finish_entry(entry, context, time.perf_counter() - started)


def _new_entry(model: dict) -> dict[str, Any]:
    return {"model_id": model["model_id"], "symbol": model["symbol"], "status": "ok", "steps_run": 0,
            "failed_steps": [], "errors": {}, "skipped_steps": {}}


def _run_steps(steps: tuple[str, ...], model: dict, day: str, context: dict, entry: dict,
               should_stop: StopCheck | None, db: sqlite_utils.Database) -> bool:
    """Run `steps` of one model in order, each isolated; False when stopped (SIGTERM) before one of them."""
    for step in steps:
        if should_stop is not None and should_stop():
            entry["status"] = "stopped"
            return False
        try:
            outcome = STEP_FUNCTIONS[step](model, day, context, db)
            log.info("%s %s %s: %s", day, model["model_id"], step, outcome)
        except StepSkipped as skipped:  # not run, not failed: neither a failure nor in the error rate
            entry["skipped_steps"][step] = str(skipped)
            log.info("%s %s %s: skipped, %s", day, model["model_id"], step, skipped)
            continue
        except Exception as exc:  # isolate: one failing step or model never stops the rest
            entry["failed_steps"].append(step)
            entry["errors"][step] = f"{type(exc).__name__}: {exc}"
            entry["status"] = "failed"
            log.warning("%s %s %s: FAILED %s: %s", day, model["model_id"], step, type(exc).__name__, exc)
        entry["steps_run"] += 1
    return True


def _finish_entry(entry: dict, context: dict, seconds: float) -> dict[str, Any]:
    report = context.get("report")
    entry["drift"] = None if report is None else report.severity
    entry["alerts"] = context.get("alerts", [])
    entry["retrain"] = context.get("retrain")
    entry["seconds"] = round(seconds, 3)
    return entry


def _cycle_days(as_of, models: list[dict], refresh_prices: bool,
                db: sqlite_utils.Database) -> tuple[str | None, dict[str, str]]:
    """The cycle's day and each model's. "Today" is the last trading day the data has for a ticker (after
    a price refresh when live), never the clock: a model's day is min(requested, its ticker's last day),
    and `as_of=None` asks for the latest of those. A requested day after every ticker's data raises
    BeyondDataError (naming the last day) before anything is written."""
    ends = {}
    for symbol in sorted({m["symbol"] for m in models}):
        try:
            if refresh_prices:
                load_prices(symbol, refresh=True, db=db)
            ends.update(data_ends([symbol], db=db))
        except MarketDataError as exc:  # that model's steps fail and say why; the others run
            log.warning("%s: no price data to date the cycle (%s)", symbol, exc)
    if as_of is None and not ends:
        return None, {}
    requested = check_within_data(as_of, ends) if as_of is not None else max(ends.values())
    days = {m["model_id"]: _day(min(requested, ends.get(m["symbol"], requested))) for m in models}
    return _day(requested), days


BEFORE_DRIFT = STEPS[:STEPS.index("drift")]  # backfill, watch, metrics: the drift check reads what they wrote


def _submit_drift_check(tasks: Executor, model: dict, day: str, settings, db: sqlite_utils.Database,
                        cache: PriceCache | None = None) -> Handle | None:
    """One model's drift check as a task with plain inputs (its row, its prices, its scored predictions, validation
    predictions and detectors' alarms, settings without secrets), read here after the steps it depends on; None
    when the drift step must run here (too few days after training: skipped; or an input it cannot read: the step
    fails in process with its own words)."""
    try:
        prices = drift.window_prices(model, day, db=db, cache=cache)
        if int((prices.index > pd.Timestamp(model["train_end"])).sum()) < drift.MIN_SAMPLES:
            return None
        inputs = drift.report_inputs(model, day, db, cache)
    except Exception:
        return None
    plain = {key: model[key] for key in ("model_id", "symbol", "model_type", "features", "train_start", "train_end")}
    return tasks.submit(f"drift-check {model['model_id']} {day}", drift.report_from_inputs, plain, prices, day,
                        settings.drift_window_days, *inputs, settings)


def _run_on_cluster(tasks: Executor, models: list[dict], model_days: dict[str, str], rates: dict[str, float],
                    should_stop: StopCheck | None, db: sqlite_utils.Database, watched: dict[str, Any],
                    prices: PriceCache) -> list[dict[str, Any]]:
    """The cycle with every model's drift check on the cluster. Two passes over the models: first the steps the
    check depends on (backfill, watch, metrics: SQLite work), each model's check submitted as soon as its inputs
    are written, so the workers compute while this process goes on; then drift (the task's report, stored here),
    alerts, retrain and forecast. Each model's steps run in the same order as in process and only this process
    writes, in the steps' usual transactions."""
    settings = task_settings()
    runs, served_today = [], []
    for model in models:
        day = model_days[model["model_id"]]
        context: dict[str, Any] = {"error_rate": rates.get(model["model_id"], 0.0), "refresh_prices": False,
                                   "served_today": served_today, "watched": watched, "prices": prices}
        entry = _new_entry(model)
        started = time.perf_counter()
        if not _run_steps(BEFORE_DRIFT, model, day, context, entry, should_stop, db):
            runs.append((model, day, context, entry, time.perf_counter() - started, False))
            break
        context["computed"] = _submit_drift_check(tasks, model, day, settings, db, prices)
        runs.append((model, day, context, entry, time.perf_counter() - started, True))
    entries = []
    for model, day, context, entry, seconds, going in runs:
        started = time.perf_counter()
        going = going and _run_steps(STEPS[len(BEFORE_DRIFT):], model, day, context, entry, should_stop, db)
        entries.append({**_finish_entry(entry, context, seconds + time.perf_counter() - started), "as_of": day})
        if not going:  # stopped: the models after it are not run, as in process
            break
    _count_forecasts(served_today, entries, db)
    return entries


def _count_forecasts(served: list[tuple[str, str, str]], entries: list[dict], db: sqlite_utils.Database) -> None:
    """The day's forecasts (day, served model, cycle model) in `daily_metrics`: one query and one upsert per day for
    every model (one model's costs ~30 ms of pandas whatever its size). If the batch fails, each is counted alone
    and a failure is its model's forecast step's; the next cycle's metrics step recounts the lookback anyway."""
    by_day: dict[str, list[tuple[str, str]]] = {}
    for day, served_id, model_id in served:
        by_day.setdefault(day, []).append((served_id, model_id))
    for day, pairs in by_day.items():
        try:
            upsert_daily_metrics(day, day, [served_id for served_id, _ in pairs], db=db)
            continue
        except Exception as exc:
            log.warning("%s: counting %d forecasts in one batch failed (%s); counting each alone", day, len(pairs), exc)
        for served_id, model_id in pairs:
            try:
                upsert_daily_metrics(day, day, [served_id], db=db)
            except Exception as exc:
                entry = next(e for e in entries if e["model_id"] == model_id)
                entry["failed_steps"].append("forecast")
                entry["errors"]["forecast"] = f"{type(exc).__name__}: {exc}"
                entry["status"] = "failed"


def run_daily_cycle(as_of=None, db: sqlite_utils.Database | None = None, should_stop: StopCheck | None = None,
                    refresh_prices: bool = False, actor: str = "scheduler",
                    symbols: list[str] | None = None) -> dict[str, Any]:
    """Backfill, metrics, drift, alerts, retrain decision and the day's forecast for every deployed model.

    The summary counts models `ok` / `failed` and lists under `skipped` the deployed models not run
    (the day is inside their training window), each with the reason; a step that cannot run yet (a
    drift check in the first days after training) is in the model's `skipped_steps`, not a failure.

    `as_of` defaults to the last trading day of the data; each model runs on min(as_of, its ticker's last
    day) and a day beyond all data is refused (`_cycle_days`). Idempotent per `as_of`: metrics are
    upserted, a stored drift check is not stored again, alerts are de-duplicated per (model, kind, day),
    a retrain decision is taken once per (model, day) and a forecast already logged is not made again.
    `should_stop` is checked between steps (SIGTERM).
    """
    db = db or get_db()
    # close retrain jobs whose process died, move aside model folders a kill left, and finish the artifacts
    # of models a kill left half-written, before any decision
    reconciled = reconcile(db, rewrite_artifacts=lifecycle.write_artifacts)
    models = [m for m in list_models(status="deployed", db=db) if symbols is None or m["symbol"] in symbols]
    day, model_days = _cycle_days(as_of, models, refresh_prices, db)
    started = time.perf_counter()
    try:
        deliver_pending(db=db)  # retry alerts a channel failed to take last time
    except Exception as exc:
        log.warning("alert delivery retry failed: %s", exc)
    rates = error_rates(day, db=db) if day else {}
    entries, skipped = [], []
    runnable = []
    for model in models:
        model_day = model_days[model["model_id"]]
        if model_day < model["train_end"]:  # never monitored or scored inside its own training window
            skipped.append({"model_id": model["model_id"], "symbol": model["symbol"], "as_of": model_day,
                            "reason": f"{model_day} is inside its training window (trained on the closes up to "
                                      f"{model['train_end']}); it runs from {model['train_end']}"})
        else:
            runnable.append(model)
    prices = PriceCache(db)  # each ticker's prices read once in this cycle, not ~10 times per model (issue 16)
    watched = _watch_all(runnable, model_days, db, prices)  # price and direction models alike
    with executor() as tasks:  # MLSA_DASK_SCHEDULER: the drift checks run on that cluster
        if tasks.remote:
            entries = _run_on_cluster(tasks, runnable, model_days, rates, should_stop, db, watched, prices)
        else:
            for model in runnable:
                if should_stop is not None and should_stop():
                    break
                entry = _run_model(model, model_days[model["model_id"]], rates.get(model["model_id"], 0.0),
                                   False, should_stop, db, watched, prices)  # prices refreshed above
                entries.append({**entry, "as_of": model_days[model["model_id"]]})
        ran_on = tasks.where
    summary = {
        "as_of": day, "ok": sum(e["status"] == "ok" for e in entries),
        "failed": sum(e["status"] == "failed" for e in entries),
        "stopped": bool(should_stop is not None and should_stop()),
        "seconds": round(time.perf_counter() - started, 3), "models": entries,
        "skipped": skipped,  # deployed models not run on this day, each with why
        "reconciled": reconciled,  # what reconcile repaired or found before the cycle
        "ran_on": ran_on,  # "in process", or the Dask scheduler the drift checks ran on
    }
    with transaction(db):
        audit(db, actor, "daily_cycle", "scheduler", summary)
    log.info("%s daily cycle: %d ok, %d failed, %d skipped in %.1f s", day, summary["ok"], summary["failed"],
             len(skipped), summary["seconds"])
    return summary


def backfill_history(start, end=None, symbols: list[str] | None = None, drift_every: int = 5,
                     db: sqlite_utils.Database | None = None, report: Callable[[str], None] | None = None) -> dict[str, int]:
    """Metrics over [start, end] and a drift check every `drift_every` trading days, per deployed model.

    Used by the demo so the Monitoring page has a year of real numbers without running the whole cycle
    (`scheduled_tasks.py --replay` runs the full cycle day by day instead).
    """
    db = db or get_db()
    models = [m for m in list_models(status="deployed", db=db) if symbols is None or m["symbol"] in symbols]
    model_ids = [r[0] for r in db.execute(
        "SELECT model_id FROM models WHERE symbol IN (SELECT value FROM json_each(?))",
        [json.dumps(sorted({m["symbol"] for m in models}))]).fetchall()]
    ends = data_ends(sorted({m["symbol"] for m in models}), db=db)  # no day beyond the data (BeyondDataError)
    end = check_within_data(end, ends) if end is not None else max(ends.values(), default=pd.Timestamp(start))
    rows = upsert_daily_metrics(start, end, model_ids, db=db)
    checks = 0
    window = get_settings().drift_window_days
    for model in models:
        days = load_prices(model["symbol"], start=start, end=end, db=db).index[::drift_every]
        for day in days:
            try:
                drift.check_model(model["model_id"], _day(day), window_days=window, db=db, store=True)
                checks += 1
            except Exception as exc:  # a day without enough history is skipped, the rest goes on
                log.info("backfill drift check %s %s skipped: %s", model["model_id"], _day(day), exc)
        if report:
            report(f"  {model['symbol']} ({model['model_id']}): daily metrics and {len(days)} drift checks "
                   f"(every {drift_every} trading days)")
    return {"metric_rows": rows, "drift_checks": checks}
