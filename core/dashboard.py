"""The Home dashboard's data: read-only aggregates across the tables, one SQL query per concern.

Per ticker, "the deployed model" here is its price model; a ticker may also have a deployed direction model
(`core.registry.model_kind`), shown in its own two columns: its id and its live accuracy beside "always up" over
its last scored days (`direction_live`, from the daily_metrics rows the cycle writes; details on Monitoring).

Nothing here writes. Every function works on an empty database (fresh install, tables other modules
have not filled yet) and returns empty frames or None, which the page words as "no drift check yet"
and so on. `as_of` (default: everything stored) bounds the dated concerns: live error, drift checks,
the sparkline; open alerts, running experiments and the last scheduler run are states, not history.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlite_utils

from core.charts import PALETTE
from core.market import available_symbols, cached_symbols, coverage
from core.metrics import LIVE_SKILL_DAYS, first_of_last_days, live_days, live_skill_table
from core.store import get_db

log = logging.getLogger(__name__)

LIVE_DAYS = LIVE_SKILL_DAYS  # live skill: core.metrics' one definition, as on Forecast and Monitoring
SPARK_WINDOW = 20       # rolling MAE window (trading days) of the sparkline
SPARK_POINTS = 120      # days shown in the sparkline
SPARK_CARDS = 12        # sparkline cards drawn on Home (each a chart); every ticker's trend is also a table column
TREND_COLUMN = "MAE trend"
LATEST_ALERTS = 5
_FAR_FUTURE = "9999-12-31"
# Markdown, HTML and Streamlit's own syntax ($ LaTeX, :colour[...] directives); each is shown as itself


_SCORED = "p.served = 1 AND p.actual_close IS NOT NULL"  # a served forecast whose close is known
_MEASURED = "d.mae IS NOT NULL AND d.n_predictions > 0"  # a daily_metrics row with errors


def _until(as_of) -> str:
    return _FAR_FUTURE if as_of is None else f"{pd.Timestamp(as_of):%Y-%m-%d}"


# --- one query per concern ----------------------------------------------------------------------------

def data_spans(db: sqlite_utils.Database) -> pd.DataFrame:
    """Per cached ticker: first and last day and the source of the newest row (three primary-key seeks each,
    never a pass over the cached days)."""
    return pd.read_sql_query(
        "SELECT t.value AS symbol, (SELECT MIN(date) FROM prices p WHERE p.symbol = t.value) AS first_day, "
        "(SELECT MAX(date) FROM prices p WHERE p.symbol = t.value) AS last_day, "
        "(SELECT source FROM prices p WHERE p.symbol = t.value ORDER BY date DESC LIMIT 1) AS source "
        "FROM json_each(?) t", db.conn, params=[json.dumps(cached_symbols(db))],
    )


def deployed_models(db: sqlite_utils.Database) -> pd.DataFrame:
    """The deployed model of each ticker, its certification, and whether its last deploy was an override."""
    return pd.read_sql_query(
        "SELECT m.symbol, m.model_id, m.model_type, m.certified, "
        "json_extract(m.metrics_json, '$.certification.computed_at') AS certified_at, "
        "json_extract(m.metrics_json, '$.skill') AS validation_skill, "
        "(SELECT json_extract(a.details_json, '$.override') FROM audit_log a "
        " WHERE a.target = m.model_id AND a.action IN ('deploy', 'rollback') ORDER BY a.id DESC LIMIT 1) AS override, "
        "(SELECT a.at FROM audit_log a WHERE a.target = m.model_id AND a.action IN ('deploy', 'rollback') "
        " ORDER BY a.id DESC LIMIT 1) AS deployed_at "
        "FROM models m WHERE m.status = 'deployed' AND m.model_type != 'direction'", db.conn,
    )


def live_errors(db: sqlite_utils.Database, as_of=None, days: int = LIVE_DAYS) -> pd.DataFrame:
    """Per ticker: the live skill of its deployed model (`core.metrics.live_skill_table`: days, start, end, MAE
    and naive MAE in $, skill, the interval of the gain over naive, verdict) over its last `days` scored days.

    Scores belong to the model that earned them: only the deployed model's own served predictions count,
    so a ticker whose model was just deployed has no row (no live history yet), never its predecessor's
    numbers. The same numbers Forecast, Monitoring and the accuracy alert show for that model.
    """
    return live_skill_table(live_days(None, as_of, days, db=db))


def latest_drift(db: sqlite_utils.Database, as_of=None) -> pd.DataFrame:
    """The newest drift check of each deployed model: verdict, severity and the day it was made for
    (one seek per model down the (model_id, as_of) index, not a rank over every stored check)."""
    return pd.read_sql_query(
        "SELECT m.symbol, c.model_id, c.as_of, c.overall_drift, c.severity FROM models m "
        "JOIN drift_checks c ON c.id = (SELECT n.id FROM drift_checks n WHERE n.model_id = m.model_id AND n.as_of <= ? "
        "ORDER BY n.as_of DESC, n.id DESC LIMIT 1) WHERE m.status = 'deployed' AND m.model_type != 'direction'", db.conn, params=[_until(as_of)],
    )


def direction_live(db: sqlite_utils.Database, as_of=None, days: int = LIVE_DAYS) -> pd.DataFrame:
    """Per ticker with a deployed direction model: its id, and over its last `days` scored days (daily_metrics
    rows with a Brier score, up to `as_of`) the prediction-weighted accuracy % of the model and of "always up",
    and the number of days. A model with no scored day yet has NaN accuracies and 0 days."""
    frame = pd.read_sql_query(
        "SELECT m.symbol, m.model_id, d.n_predictions, d.accuracy, d.always_up_accuracy FROM models m "
        "LEFT JOIN (SELECT model_id, n_predictions, accuracy, always_up_accuracy, ROW_NUMBER() OVER "
        "(PARTITION BY model_id ORDER BY date DESC) AS recent FROM daily_metrics WHERE brier IS NOT NULL AND date <= ? "
        "AND model_id IN (SELECT model_id FROM models WHERE status = 'deployed' AND model_type = 'direction')) d "
        "ON d.model_id = m.model_id AND d.recent <= ? WHERE m.status = 'deployed' AND m.model_type = 'direction'",
        db.conn, params=[_until(as_of), int(days)])
    frame["weight"] = pd.to_numeric(frame["n_predictions"], errors="coerce").fillna(0.0)
    out = []
    for (symbol, model_id), rows in frame.groupby(["symbol", "model_id"]):
        scored = rows[rows["weight"] > 0]
        weights = scored["weight"].to_numpy(dtype=float)
        out.append({"symbol": symbol, "model_id": model_id, "days": len(scored),
                    **{k: float(np.average(scored[k].astype(float), weights=weights)) if len(scored) else np.nan
                       for k in ("accuracy", "always_up_accuracy")}})
    return pd.DataFrame(out, columns=["symbol", "model_id", "days", "accuracy", "always_up_accuracy"])


def direction_label(row) -> str:
    """"53.3% vs always up 51.7% (30 d)", "no live history yet", or "—" without a deployed direction model."""
    if row is None:
        return "—"
    if not row["days"]:
        return "no live history yet"
    return f"{row['accuracy']:.1f}% vs always up {row['always_up_accuracy']:.1f}% ({row['days']} d)"


def running_experiments(db: sqlite_utils.Database) -> pd.DataFrame:
    """Running A/B tests with their arms and the served predictions recorded so far."""
    return pd.read_sql_query(
        "SELECT e.id, e.name, e.symbol, e.start_date, e.end_date, e.shadow, "
        "(SELECT GROUP_CONCAT(a.arm || ': ' || a.model_id, ' · ') FROM experiment_arms a WHERE a.experiment_id = e.id) AS arms, "
        "(SELECT COUNT(*) FROM predictions p WHERE p.experiment_id = e.id) AS predictions "
        "FROM experiments e WHERE e.status = 'running' ORDER BY e.start_date DESC", db.conn,
    )


def open_alerts(db: sqlite_utils.Database, limit: int = LATEST_ALERTS) -> pd.DataFrame:
    """The newest unacknowledged alerts, each row carrying the open count per severity (window sums)."""
    return pd.read_sql_query(
        "SELECT a.id, a.created_at, m.symbol, a.model_id, a.kind, a.severity, a.message, "
        "COUNT(*) OVER () AS n_open, "
        "SUM(a.severity = 'critical') OVER () AS n_critical, SUM(a.severity = 'warning') OVER () AS n_warning "
        "FROM alerts a LEFT JOIN models m ON m.model_id = a.model_id WHERE a.acknowledged_at IS NULL "
        "ORDER BY a.created_at DESC, a.id DESC LIMIT ?", db.conn, params=[limit],
    )


def open_alert_counts(db: sqlite_utils.Database) -> pd.DataFrame:
    """Per ticker: unacknowledged alerts and how many of them are critical."""
    return pd.read_sql_query(
        "SELECT m.symbol, COUNT(*) AS n_open, SUM(a.severity = 'critical') AS n_critical "
        "FROM alerts a JOIN models m ON m.model_id = a.model_id WHERE a.acknowledged_at IS NULL GROUP BY m.symbol",
        db.conn,
    )


def alerts_label(n_open, n_critical) -> str:
    """"2 (1 critical)", "1", or "none"."""
    if not n_open:
        return "none"
    return f"{int(n_open)} ({int(n_critical)} critical)" if n_critical else f"{int(n_open)}"


def last_scheduler_run(db: sqlite_utils.Database) -> dict | None:
    """The newest daily-cycle run (audit_log, actor 'scheduler' or the demo's 'scheduler (demo replay)'): when,
    for which day, and if it succeeded.

    The summary is written by `core.cycle.run_daily_cycle`: `failed` counts models whose cycle
    failed, `stopped` marks a run interrupted between steps; success means neither.
    """
    row = db.execute(
        "SELECT at, details_json FROM audit_log WHERE action = 'daily_cycle' AND actor LIKE 'scheduler%' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    summary = json.loads(row[1] or "{}")
    failed = int(summary.get("failed") or 0)
    tickers = sorted({entry.get("symbol") for entry in summary.get("models", []) if entry.get("symbol")})
    return {"at": row[0], "as_of": summary.get("as_of"), "ok": int(summary.get("ok") or 0), "failed": failed,
            "seconds": summary.get("seconds"), "succeeded": failed == 0 and not summary.get("stopped", False),
            "tickers": tickers}


def run_scope(run: dict) -> str:
    """Which tickers a cycle covered, for the sentence under "Scheduler": "AAPL, MSFT" or "12 tickers"."""
    tickers = run.get("tickers") or []
    if not tickers:
        return "no ticker"
    return ", ".join(tickers) if len(tickers) <= 4 else f"{len(tickers)} tickers"


def daily_errors(db: sqlite_utils.Database, as_of=None, days: int = SPARK_POINTS + SPARK_WINDOW - 1) -> pd.DataFrame:
    """Per ticker and day, over the ticker's last `days` scored days (what the sparkline needs): MAE and
    naive MAE of the ticker's deployed model, and where they came from.

    Only the deployed model's own days (its predecessor's errors are not its score), from
    `daily_metrics` (one row per model and day); a ticker without rows there falls back to the model's
    served prediction log. Both reads walk an index back from `as_of`, so the cost does not grow with history.
    """
    params = {"until": _until(as_of), "skip": days - 1}
    metrics = pd.read_sql_query(
        f"SELECT m.symbol, m.model_id, d.date AS day, d.mae, d.naive_mae, 'daily_metrics' AS source "
        f"FROM models m JOIN daily_metrics d ON d.model_id = m.model_id WHERE m.status = 'deployed' AND m.model_type != 'direction' AND {_MEASURED} "
        f"AND d.date <= :until AND d.date >= {first_of_last_days('daily_metrics', 'date', _MEASURED, alias='d')}",
        db.conn, params=params,
    )
    logged = pd.read_sql_query(
        f"SELECT m.symbol, m.model_id, p.as_of AS day, AVG(ABS(p.predicted_close - p.actual_close)) AS mae, "
        f"AVG(ABS(p.last_close - p.actual_close)) AS naive_mae, 'prediction log' AS source "
        f"FROM models m JOIN predictions p ON p.model_id = m.model_id WHERE m.status = 'deployed' AND m.model_type != 'direction' "
        f"AND NOT EXISTS (SELECT 1 FROM daily_metrics d WHERE d.model_id = m.model_id AND {_MEASURED} AND d.date <= :until) "
        f"AND {_SCORED} AND p.as_of <= :until AND p.as_of >= {first_of_last_days('predictions', 'as_of', _SCORED)} "
        f"GROUP BY m.symbol, p.as_of", db.conn, params=params,
    )
    frames = [f for f in (metrics, logged) if not f.empty]
    if not frames:
        return metrics
    return pd.concat(frames, ignore_index=True).sort_values(["symbol", "day"], ignore_index=True)


def rolling_mae(daily: pd.DataFrame, window: int = SPARK_WINDOW, points: int = SPARK_POINTS) -> dict[str, pd.Series]:
    """Per ticker: the rolling `window`-day MAE over its last `points` days, date-indexed;
    `attrs["source"]` says which table it came from, `attrs["model_id"]` whose errors they are."""
    series: dict[str, pd.Series] = {}
    for symbol, group in daily.groupby("symbol", sort=True):
        values = pd.Series(group["mae"].to_numpy(dtype=float), index=pd.to_datetime(group["day"]), name=symbol)
        series[symbol] = values.rolling(window, min_periods=1).mean().iloc[-points:]
        series[symbol].attrs["source"] = group["source"].iloc[0]
        series[symbol].attrs["model_id"] = group["model_id"].iloc[0]
    return series


# --- the page's view ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dashboard:
    tickers: pd.DataFrame
    sparklines: dict[str, pd.Series]  # the tickers with a card (`featured`), not every ticker
    experiments: pd.DataFrame
    alerts: pd.DataFrame
    last_run: dict | None
    counts: dict[str, int] = field(default_factory=dict)


def certification_label(certified, certified_at, override) -> str:
    """✅ certified / ❌ failed / not run, with "(override)" when it went live through an override."""
    if certified:
        return "✅ certified"
    label = "❌ failed" if certified_at else "not run"
    return f"{label} (override)" if override else label


def drift_label(overall_drift, severity) -> str:
    if overall_drift is None or (isinstance(overall_drift, float) and np.isnan(overall_drift)):
        return "no drift check yet"
    return f"⚠️ drift ({severity})" if int(overall_drift) else "✅ no drift"


def live_verdict(deployed: bool, words: str | None) -> str:
    """The deployed model's live standing in words (`core.metrics.skill_words`); "no live history yet" when it
    has not been scored."""
    if not deployed:
        return "—"
    return words or "no live history yet"


def verdict_color(words: str | None) -> str:
    """A sparkline card's colour from the live-skill words, as the table says them: green only when the model
    credibly beats naive, red when it is credibly worse, grey otherwise (on par, too few days, no history)."""
    return {"beats naive": PALETTE["good"], "worse than naive": PALETTE["bad"]}.get(words or "", PALETTE["muted"])


def _ticker_rows(db: sqlite_utils.Database, as_of) -> pd.DataFrame:
    symbols = available_symbols()
    spans = data_spans(db).set_index("symbol")
    deployed = deployed_models(db).set_index("symbol")
    live = live_errors(db, as_of).set_index("symbol")
    drift = latest_drift(db, as_of).set_index("symbol")
    alert_counts = open_alert_counts(db).set_index("symbol")
    directions = direction_live(db, as_of).set_index("symbol")
    rows = []
    for symbol in symbols:
        if symbol in spans.index:
            span = spans.loc[symbol]
            data = f"{span['first_day']} → {span['last_day']} ({span['source']})"
        else:
            bundled = coverage(symbol)
            data = f"{bundled[0]:%Y-%m-%d} → {bundled[1]:%Y-%m-%d} (bundled)" if bundled else "not loaded"
        model = deployed.loc[symbol] if symbol in deployed.index else None
        perf = live.loc[symbol] if symbol in live.index else None
        check = drift.loc[symbol] if symbol in drift.index else None
        skill = perf["skill"] if perf is not None else None
        counts = alert_counts.loc[symbol] if symbol in alert_counts.index else None
        direction = directions.loc[symbol] if symbol in directions.index else None
        rows.append({  # the columns an analyst acts on first; the data span last
            "ticker": symbol,
            "deployed model": model["model_id"] if model is not None else "none",
            "verdict": live_verdict(model is not None, perf["verdict"] if perf is not None else None),
            "skill (30 d)": skill,
            "last drift": drift_label(check["overall_drift"], check["severity"]) if check is not None
            else ("no drift check yet" if model is not None else "—"),
            "drift checked": check["as_of"] if check is not None else None,
            "open alerts": alerts_label(*(counts[["n_open", "n_critical"]] if counts is not None else (0, 0))),
            "certification": certification_label(model["certified"], model["certified_at"], model["override"])
            if model is not None else "—",
            f"direction accuracy ({LIVE_DAYS} d)": direction_label(direction),
            "direction model": direction["model_id"] if direction is not None else "none",
            "live MAE $ (30 d)": perf["mae"] if perf is not None else None,
            "naive MAE $ (30 d)": perf["naive_mae"] if perf is not None else None,
            "data": data,
        })
    return pd.DataFrame(rows)


def featured(sparklines: dict[str, pd.Series], tickers: pd.DataFrame, limit: int = SPARK_CARDS) -> dict[str, pd.Series]:
    """The sparklines that get a card: every one up to `limit`, else the `limit` tickers with the lowest live
    skill (those losing to naive first; no skill yet counts as lowest), in ticker order. A hundred chart cards
    cost seconds per page load and no one reads them; the table's trend column keeps every ticker."""
    if len(sparklines) <= limit:
        return sparklines
    skill = tickers.set_index("ticker")["skill (30 d)"].astype(float).reindex(list(sparklines)).fillna(-np.inf)
    chosen = set(skill.sort_values(kind="stable").index[:limit])
    return {symbol: series for symbol, series in sparklines.items() if symbol in chosen}


def load_dashboard(as_of=None, db: sqlite_utils.Database | None = None) -> Dashboard:
    """Everything the Home page shows, from stored data only (no model is loaded, nothing is computed)."""
    db = db or get_db()
    tickers = _ticker_rows(db, as_of)
    daily = daily_errors(db, as_of)
    alerts = open_alerts(db)
    experiments = running_experiments(db)
    deployed = tickers[tickers["deployed model"] != "none"]
    counts = {
        "tickers": len(tickers), "deployed": len(deployed),
        "certified": int((deployed["certification"] == "✅ certified").sum()),
        "drifting": int(deployed["last drift"].str.startswith("⚠️").sum()),
        "open_alerts": int(alerts["n_open"].iloc[0]) if not alerts.empty else 0,
        "critical_alerts": int(alerts["n_critical"].iloc[0] or 0) if not alerts.empty else 0,
        "running_experiments": len(experiments),
    }
    sparklines = rolling_mae(daily)
    tickers.insert(len(tickers.columns) - 1, TREND_COLUMN,  # a table sparkline per ticker: no chart each
                   [list(np.round(sparklines[s].to_numpy(dtype=float), 4)) if s in sparklines else None
                    for s in tickers["ticker"]])
    return Dashboard(tickers=tickers, sparklines=featured(sparklines, tickers),
                     experiments=experiments,
                     alerts=alerts[["severity", "kind", "symbol", "message", "created_at", "model_id"]],
                     last_run=last_scheduler_run(db), counts=counts)
