"""Daily metrics: owns `daily_metrics`; per-day accuracy, volume and latency of every model, live skill.

`daily_metrics` has one row per (model, day the predictions were made): its volume and latency
percentiles are known at once, its error columns (MAE / RMSE in $, MAPE and directional accuracy in
%, and the naive baseline's MAE on the same predictions) fill in once the next close is known. The
daily cycle (`core.cycle`) therefore recomputes the last `METRICS_LOOKBACK_DAYS` calendar days each
run (an upsert, so running a day twice changes nothing). Also the read-only views the Monitoring
page draws: interval widths from the prediction log and the largest PSI of each stored drift check.

Live skill has ONE definition, here (`live_skill_table` / `live_skill_of`), which Home, Forecast, Monitoring
and the accuracy alert all show: 1 - MAE_model / MAE_naive over the model's last `LIVE_SKILL_DAYS` scored
days, where a day counts when the model SERVED a forecast made that day (shadow rows are not what users
saw), its actual close is known by `as_of`, and the day is not inside its training window (out of sample).
Each day weighs the same. Its words ("beats naive" / "on par with naive" / "worse than naive") come from a
paired t-test of the daily MAE difference (naive - model, $) over those days: a verdict other than "on par"
needs the `SKILL_CONFIDENCE` interval of the mean difference to exclude 0 (for one-step forecasts this is
the Diebold-Mariano test with absolute-error loss).
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.direction_stats import persistence_baseline, probability_losses
from core.market import load_prices
from core.registry import DIRECTION_TYPE
from core.schema import DIRECTION_METRIC_COLUMNS
from core.store import get_db, transaction, where_clause

LIVE_SKILL_DAYS = 30  # THE live-skill window: scored, served, out-of-sample days (Home, Forecast, Monitoring, alert)
LIVE_SKILL_MIN_DAYS = 10  # fewer scored days give no verdict ("too few days to judge") and no accuracy alert
SKILL_CONFIDENCE = 0.95  # the paired test's interval that must exclude 0 before a verdict says beats / worse
SKILL_DROP = 0.05  # degraded: live skill this far below validation skill, and credibly below it
METRICS_LOOKBACK_DAYS = 14  # calendar days recomputed each run so late actuals are counted
WIDTH_WINDOW_DAYS = 365  # the interval-width histogram shows the last year's predictions
METRIC_COLUMNS = ["n_predictions", "mae", "rmse", "mape", "directional_accuracy", "naive_mae",
                  "latency_p50", "latency_p95", "latency_p99"]


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"


# --- daily metrics ------------------------------------------------------------------------------------

def compute_daily_metrics(start, end, model_ids: list[str] | None = None,
                          db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Metrics per (model, prediction day) in [start, end] from the prediction log, vectorised by group.

    Directional accuracy counts a "no change" prediction as a miss, as `core.training.price_metrics`
    does; shadow (not served) predictions count for their own model.
    """
    db = db or get_db()
    clauses, params = ["as_of >= ?", "as_of <= ?", "p_up IS NULL"], [_day(start), _day(end)]  # P(up) rows: direction_daily_metrics
    if model_ids is not None:
        if not model_ids:
            return pd.DataFrame(columns=["model_id", "date", *METRIC_COLUMNS])
        clauses.append(f"model_id IN ({', '.join('?' * len(model_ids))})")
        params.extend(model_ids)
    rows = db.execute(
        "SELECT model_id, as_of, predicted_close, last_close, actual_close, latency_ms FROM predictions "
        f"WHERE {' AND '.join(clauses)} ORDER BY model_id, as_of", params,
    ).fetchall()
    if not rows:
        return pd.DataFrame(columns=["model_id", "date", *METRIC_COLUMNS])
    model_col, day_col, *values = (np.array(column, dtype=object) for column in zip(*rows))
    # NULL -> NaN: rows logged through `abtest.record_prediction` have no latency and may have no last close
    predicted, last, actual, latency = (column.astype(float) for column in values)
    # rows come sorted by (model, day): a group starts where either changes
    starts = np.r_[True, (model_col[1:] != model_col[:-1]) | (day_col[1:] != day_col[:-1])]
    codes, n_groups = np.cumsum(starts) - 1, int(starts.sum())
    error = np.abs(predicted - actual)
    hit = np.where(np.isnan(actual) | np.isnan(last), np.nan,
                   (np.sign(predicted - last) == np.sign(actual - last)).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        ape = error / actual * 100
    out = pd.DataFrame({
        "model_id": pd.array(model_col[starts], dtype="str"), "date": pd.array(day_col[starts], dtype="str"),
        "n_predictions": np.bincount(codes, minlength=n_groups),
        "mae": _group_mean(codes, error, n_groups), "rmse": np.sqrt(_group_mean(codes, error**2, n_groups)),
        "mape": _group_mean(codes, ape, n_groups), "directional_accuracy": _group_mean(codes, hit, n_groups) * 100,
        "naive_mae": _group_mean(codes, np.abs(last - actual), n_groups),
    })
    for q, column in ((0.5, "latency_p50"), (0.95, "latency_p95"), (0.99, "latency_p99")):
        out[column] = _group_quantile(codes, latency, n_groups, q)
    return out


def _group_mean(codes: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Mean per group skipping NaN (NaN for a group without a value), as pandas' groupby mean: two bincounts
    instead of pandas' per-call machinery, which cost ~10 ms per model per cycle step at 100 models (issue 16)."""
    known = ~np.isnan(values)
    total = np.bincount(codes[known], weights=values[known], minlength=n_groups)
    count = np.bincount(codes[known], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _group_quantile(codes: np.ndarray, values: np.ndarray, n_groups: int, q: float) -> np.ndarray:
    """The q-quantile per group with linear interpolation, skipping NaN (NaN for a group without a value), as
    pandas' groupby quantile: sort by (group, value), then interpolate inside each group's run of known values."""
    known = ~np.isnan(values)
    codes, values = codes[known], values[known]
    order = np.lexsort((values, codes))
    codes, values = codes[order], values[order]
    count = np.bincount(codes, minlength=n_groups)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    position = q * np.maximum(count - 1, 0)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, np.maximum(count - 1, 0))
    out = np.full(n_groups, np.nan)
    has = count > 0
    low, high = values[(start + below)[has]], values[(start + above)[has]]
    out[has] = low + (high - low) * (position - below)[has]
    return out


def upsert_daily_metrics(start, end, model_ids: list[str] | None = None,
                         db: sqlite_utils.Database | None = None) -> int:
    """Recompute and upsert `daily_metrics` for [start, end]; returns the number of rows written."""
    db = db or get_db()
    metrics = compute_daily_metrics(start, end, model_ids, db=db)
    classifier_rows = upsert_direction_metrics(start, end, model_ids, db=db)  # direction models, in classifier terms
    if metrics.empty:
        return classifier_rows
    records = metrics.astype(object).where(metrics.notna(), None).to_dict("records")
    with transaction(db):
        db["daily_metrics"].upsert_all(records, pk=("model_id", "date"))
    return len(records) + classifier_rows


def monitored_models(db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Models with daily metrics (model_id, symbol): the Monitoring page's pickers, without reading the metrics
    (one primary-key probe per model)."""
    db = db or get_db()
    return pd.read_sql_query(
        "SELECT m.model_id, m.symbol FROM models m WHERE EXISTS (SELECT 1 FROM daily_metrics d WHERE d.model_id = m.model_id) "
        "ORDER BY m.symbol, m.model_id", db.conn)


def metrics_frame(model_id: str | None = None, symbol: str | None = None, start=None, end=None,
                  db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """`daily_metrics` joined with each model's ticker and type, oldest first (what the Monitoring page draws)."""
    db = db or get_db()
    where, params = where_clause(("d.model_id = ?", model_id), ("m.symbol = ?", symbol),
                                 ("d.date >= ?", _day(start) if start is not None else None),
                                 ("d.date <= ?", _day(end) if end is not None else None))
    frame = pd.read_sql_query(
        f"SELECT d.*, m.symbol, m.model_type FROM daily_metrics d JOIN models m ON m.model_id = d.model_id "
        f"{where} ORDER BY d.date, d.model_id", db.conn, params=params,
    )
    frame["date"] = pd.to_datetime(frame["date"])
    return frame


_FAR_FUTURE = "9999-12-31"
# a forecast that counts for live skill: served by model m, its actual known by :until, out of sample (one made on
# train_end targets the first close the model never saw: `core.predict.in_training_window`)
_LIVE = "p.served = 1 AND p.predicted_close IS NOT NULL AND p.actual_close IS NOT NULL AND p.as_of >= substr(m.train_end, 1, 10) AND p.target_date <= :until"


def first_of_last_days(table: str, day: str, condition: str, alias: str = "p") -> str:
    """SQL for the first of the last `:skip + 1` days up to `:until` on which the outer row's model `m` has a row
    of `table` meeting `condition` ('' when it has fewer): one walk back along the (model_id, day) index."""
    return (f"ifnull((SELECT {alias}.{day} FROM {table} {alias} WHERE {alias}.model_id = m.model_id AND {condition} "
            f"AND {alias}.{day} <= :until GROUP BY {alias}.{day} ORDER BY {alias}.{day} DESC LIMIT 1 OFFSET :skip), '')")


def live_days(model_ids: list[str] | None = None, as_of=None, days: int = LIVE_SKILL_DAYS,
              db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Per model and scored day (the last `days` of them up to `as_of`): symbol, model and naive MAE in $.

    `model_ids=None` means every deployed model (Home). Reads only those days: the first of them is found
    walking back along the (model_id, as_of) index, never a pass over the whole log.
    """
    db = db or get_db()
    until = _FAR_FUTURE if as_of is None else _day(as_of)
    if model_ids is None:
        chosen, params = "m.status = 'deployed'", {}
    else:
        chosen = "m.model_id IN (SELECT value FROM json_each(:ids))"
        params = {"ids": json.dumps(list(model_ids))}
    frame = pd.read_sql_query(
        f"SELECT m.model_id, m.symbol, p.as_of AS day, COUNT(*) AS n, AVG(ABS(p.predicted_close - p.actual_close)) AS mae, "
        f"AVG(ABS(p.last_close - p.actual_close)) AS naive_mae FROM models m JOIN predictions p ON p.model_id = m.model_id "
        f"WHERE {chosen} AND {_LIVE} AND p.as_of <= :until AND p.as_of >= {first_of_last_days('predictions', 'as_of', _LIVE)} "
        f"GROUP BY m.model_id, p.as_of ORDER BY m.model_id, p.as_of", db.conn,
        params={**params, "until": until, "skip": days - 1},
    )
    return frame.astype({"mae": float, "naive_mae": float})


LIVE_SKILL_COLUMNS = ["model_id", "symbol", "days", "start", "end", "mae", "naive_mae", "skill",
                      "gain_low", "gain_high", "verdict"]


def skill_words(days: int, gain_low: float, gain_high: float) -> str:
    """The verdict for a live skill: "beats naive" / "worse than naive" only when the confidence interval of
    the daily MAE gain over naive ($, naive - model) excludes 0, else "on par with naive"."""
    if days == 0:
        return "no live history yet"
    if days < LIVE_SKILL_MIN_DAYS or not (np.isfinite(gain_low) and np.isfinite(gain_high)):
        return "too few days to judge"
    if gain_low > 0:
        return "beats naive"
    if gain_high < 0:
        return "worse than naive"
    return "on par with naive"


def _t_interval(mean: np.ndarray, std: np.ndarray, n: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """The two-sided t interval of a mean (what scipy.stats.ttest_1samp(...).confidence_interval gives)."""
    # scipy.special's Student t quantile (what scipy.stats.t.ppf calls) imports in ~0.1 s; scipy.stats costs ~0.5-2 s
    # of Home's first visit, which only needs this one quantile
    from scipy.special import stdtrit

    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = stdtrit(n - 1, 0.5 + confidence / 2) * np.asarray(std, dtype=float) / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return mean - half, mean + half


def live_skill_table(days_frame: pd.DataFrame, confidence: float = SKILL_CONFIDENCE) -> pd.DataFrame:
    """Per model, from `live_days` rows: days, first and last day, MAE and naive MAE ($, each day weighs the
    same), skill, the confidence interval of the mean daily gain over naive ($) and the verdict in words."""
    if days_frame.empty:
        return pd.DataFrame(columns=LIVE_SKILL_COLUMNS)
    frame = days_frame.assign(gain=days_frame["naive_mae"] - days_frame["mae"])
    grouped = frame.groupby("model_id", sort=True)
    out = grouped.agg(symbol=("symbol", "first"), days=("day", "size"), start=("day", "min"), end=("day", "max"),
                      mae=("mae", "mean"), naive_mae=("naive_mae", "mean"), gain_mean=("gain", "mean"),
                      gain_std=("gain", "std"))
    out["skill"] = np.where(out["naive_mae"] > 0, 1 - out["mae"] / out["naive_mae"].where(out["naive_mae"] > 0), np.nan)
    out["gain_low"], out["gain_high"] = _t_interval(out["gain_mean"].to_numpy(), out["gain_std"].to_numpy(),
                                                    out["days"].to_numpy(), confidence)
    out["verdict"] = [skill_words(int(d), lo, hi) for d, lo, hi in zip(out["days"], out["gain_low"], out["gain_high"])]
    return out.reset_index()[LIVE_SKILL_COLUMNS]


def live_skill_of(model_id: str, as_of=None, days: int = LIVE_SKILL_DAYS,
                  db: sqlite_utils.Database | None = None) -> dict:
    """One model's live skill row (`live_skill_table`) as a dict; days 0 and NaN numbers when never scored."""
    table = live_skill_table(live_days([model_id], as_of, days, db=db))
    if table.empty:
        return {"model_id": model_id, "symbol": None, "days": 0, "start": None, "end": None, "mae": float("nan"),
                "naive_mae": float("nan"), "skill": float("nan"), "gain_low": float("nan"), "gain_high": float("nan"),
                "verdict": skill_words(0, float("nan"), float("nan"))}
    return table.iloc[0].to_dict()


def skill_drop(days_frame: pd.DataFrame, validation_skill: float | None, confidence: float = SKILL_CONFIDENCE) -> dict:
    """Has live skill fallen below the validation skill? Judged as skill vs naive ON THE SAME DAYS, so a volatile
    live period against a calm validation period (every error larger in $ or %) is not a degradation.

    Degraded when, over at least `LIVE_SKILL_MIN_DAYS` scored days, live skill is more than `SKILL_DROP` below the
    validation skill AND credibly below it: the daily excess `mae - (1 - validation_skill) * naive_mae` (0 on a
    day the model keeps its validation skill) has a one-sided `confidence` interval above 0.
    Returns live_skill, validation_skill, drop, days, p_value, degraded, severity ("critical" past 4x the limit).
    """
    days = len(days_frame)
    result = {"live_skill": float("nan"), "validation_skill": validation_skill, "drop": float("nan"), "days": days,
              "p_value": float("nan"), "degraded": False, "severity": None}
    if days == 0 or validation_skill is None or not np.isfinite(validation_skill):
        return result
    mae, naive = days_frame["mae"].to_numpy(dtype=float), days_frame["naive_mae"].to_numpy(dtype=float)
    live = float(1 - mae.mean() / naive.mean()) if naive.mean() > 0 else float("nan")
    result.update(live_skill=live, drop=float(validation_skill - live))
    if days < LIVE_SKILL_MIN_DAYS or not np.isfinite(live):
        return result
    excess = mae - (1 - validation_skill) * naive
    std = excess.std(ddof=1)
    if std > 1e-9 * max(1.0, float(np.abs(excess).mean())):  # not a rounding error's spread
        from scipy import stats  # lazy

        p_value = float(stats.ttest_1samp(excess, 0.0, alternative="greater").pvalue)
    else:  # every day the same excess: certain
        p_value = 0.0 if excess.mean() > 0 else 1.0
    degraded = bool(result["drop"] > SKILL_DROP and p_value < 1 - confidence)
    result.update(p_value=p_value, degraded=degraded,
                  severity=("critical" if result["drop"] > 4 * SKILL_DROP else "warning") if degraded else None)
    return result


def interval_widths(model_id: str | None = None, symbol: str | None = None, start=None, end=None,
                    db: sqlite_utils.Database | None = None) -> pd.Series:
    """Prediction-interval widths in % of the last close (two columns of the log, no error columns); pages pass
    a window (`recent_interval_widths`), so a load never reads the whole history."""
    db = db or get_db()
    clauses, params = ["served = 1", "p_up IS NULL"], []  # a served P(up) has no interval
    for column, value in (("model_id", model_id), ("symbol", symbol)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    for op, value in ((">=", start), ("<=", end)):
        if value is not None:
            clauses.append(f"as_of {op} ?")
            params.append(_day(value))
    frame = pd.read_sql_query(f"SELECT (upper - lower) * 100.0 / last_close AS width FROM predictions "
                              f"WHERE {' AND '.join(clauses)}", db.conn, params=params)
    return frame["width"]


def recent_interval_widths(metrics: pd.DataFrame, model_id: str | None = None, symbol: str | None = None,
                           db: sqlite_utils.Database | None = None) -> pd.Series:
    """The interval widths of the last `WIDTH_WINDOW_DAYS` calendar days up to the newest day in `metrics`."""
    if metrics.empty:
        return pd.Series(dtype=float, name="width")
    end = pd.Timestamp(metrics["date"].max())
    return interval_widths(model_id, symbol, start=end - pd.Timedelta(days=WIDTH_WINDOW_DAYS), end=end, db=db)


def _max_psi(report: Any) -> float:
    """The largest value stored under a "psi" key anywhere in a drift report (its layout is drift.py's)."""
    if isinstance(report, dict):
        found = [float(v) for k, v in report.items() if k == "psi" and isinstance(v, (int, float))]
        found += [_max_psi(v) for k, v in report.items() if isinstance(v, (dict, list))]
    elif isinstance(report, list):
        found = [_max_psi(v) for v in report]
    else:
        return float("nan")
    found = [v for v in found if np.isfinite(v)]
    return max(found) if found else float("nan")


def psi_history(model_id: str | None = None, symbol: str | None = None,
                db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Drift checks oldest first: as_of, model, severity, overall verdict and the largest feature PSI."""
    db = db or get_db()
    where, params = where_clause(("c.model_id = ?", model_id), ("m.symbol = ?", symbol))
    # SQLite walks each report (json_tree, in C) for its "psi" values; only a report it cannot read (a NaN
    # written by Python's json) comes back whole, to be walked in Python
    frame = pd.read_sql_query(
        "SELECT c.as_of, c.model_id, m.symbol, c.severity, c.overall_drift, "
        "CASE WHEN json_valid(c.report_json) THEN (SELECT MAX(t.value) FROM json_tree(c.report_json) t "
        "  WHERE t.key = 'psi' AND t.type IN ('integer', 'real')) END AS max_psi, "
        "CASE WHEN NOT json_valid(c.report_json) THEN c.report_json END AS unparsed FROM drift_checks c "
        f"JOIN models m ON m.model_id = c.model_id {where} ORDER BY c.as_of, c.id", db.conn, params=params,
    )
    unparsed = frame.pop("unparsed")
    frame["max_psi"] = [_max_psi(json.loads(text)) if isinstance(text, str) else value
                        for text, value in zip(unparsed, frame["max_psi"])]
    frame["max_psi"] = frame["max_psi"].astype(float)
    frame["as_of"] = pd.to_datetime(frame["as_of"])
    return frame


# --- direction models: served P(up) scored in classifier terms ---------------------------------------------

DIRECTION_DAILY_COLUMNS = ["n_predictions", *DIRECTION_METRIC_COLUMNS, "latency_p50", "latency_p95", "latency_p99"]
BASELINES = ("always_up", "persistence")


def training_baseline_rates(symbol: str, train_start: str, train_end: str,
                            db: sqlite_utils.Database | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """(up rate, today-up flags, labels) of a direction model's training days: what its two baselines learn from,
    as `core.direction` builds them on each fold (always up = the up rate; same as today = how often tomorrow
    repeated today). Only closes up to `train_end` are read: the baselines never see the scored days."""
    closes = load_prices(symbol, start=pd.Timestamp(train_start) - pd.Timedelta(days=10), end=train_end, db=db)["close"]
    went_up = (closes.diff() > 0).to_numpy()
    labels = (closes.shift(-1) > closes).to_numpy()
    days = (closes.index >= pd.Timestamp(train_start)) & (np.arange(len(closes)) < len(closes) - 1)  # a known next close
    return float(labels[days].mean()), went_up[days].astype(int), labels[days].astype(int)


def direction_daily_metrics(start, end, model_ids: list[str] | None = None,
                            db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Per (direction model, prediction day) in [start, end]: volume, latency, and once the next close is known,
    accuracy (%), Brier score and log loss of the served P(up), beside the "always up" and "same as today"
    baselines on the same days (both learnt from the model's training window). Shadow rows count for their model."""
    db = db or get_db()
    where, params = where_clause(("p.p_up IS NOT NULL", True), ("p.as_of >= ?", _day(start)), ("p.as_of <= ?", _day(end)))
    if model_ids is not None:
        if not model_ids:
            return pd.DataFrame(columns=["model_id", "date", *DIRECTION_DAILY_COLUMNS])
        where += f" AND p.model_id IN ({', '.join('?' * len(model_ids))})"
        params.extend(model_ids)
    frame = pd.read_sql_query(  # the close before as_of (the primary key's index): did "today" go up?
        "SELECT p.model_id, p.as_of, p.p_up, p.last_close, p.actual_close, p.latency_ms, m.symbol, m.train_start, "
        "m.train_end, (SELECT q.close FROM prices q WHERE q.symbol = p.symbol AND q.date < p.as_of "
        f"ORDER BY q.date DESC LIMIT 1) AS previous_close FROM predictions p JOIN models m ON m.model_id = p.model_id {where}",
        db.conn, params=params)
    if frame.empty:
        return pd.DataFrame(columns=["model_id", "date", *DIRECTION_DAILY_COLUMNS])
    numeric = ["p_up", "last_close", "actual_close", "latency_ms", "previous_close"]
    frame[numeric] = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    known = frame["actual_close"].notna()
    up = (frame["actual_close"] > frame["last_close"]).astype(float).where(known)
    today_up = (frame["last_close"] > frame["previous_close"]).to_numpy()
    probabilities = {"": frame["p_up"].to_numpy(), "always_up_": np.full(len(frame), np.nan),
                     "persistence_": np.full(len(frame), np.nan)}
    for (symbol, train_start, train_end), rows in frame.groupby(["symbol", "train_start", "train_end"]).groups.items():
        rate, train_today_up, train_labels = training_baseline_rates(symbol, train_start, train_end, db=db)
        at = frame.index.get_indexer(rows)
        probabilities["always_up_"][at] = rate
        probabilities["persistence_"][at] = persistence_baseline(train_today_up, train_labels, today_up[at])
    for prefix, p in probabilities.items():
        frame[f"{prefix}log_loss"], frame[f"{prefix}brier"] = probability_losses(p, up.to_numpy())
        frame[f"{prefix}accuracy"] = ((p >= 0.5) == (up == 1)).astype(float).where(known) * 100
    grouped = frame.groupby(["model_id", "as_of"])
    out = grouped[list(DIRECTION_METRIC_COLUMNS)].mean()
    out["n_predictions"] = grouped.size()
    latency = grouped["latency_ms"].quantile([0.5, 0.95, 0.99]).unstack()
    out["latency_p50"], out["latency_p95"], out["latency_p99"] = latency[0.5], latency[0.95], latency[0.99]
    return out.reset_index().rename(columns={"as_of": "date"})[["model_id", "date", *DIRECTION_DAILY_COLUMNS]]


def upsert_direction_metrics(start, end, model_ids: list[str] | None = None,
                             db: sqlite_utils.Database | None = None) -> int:
    """Recompute and upsert the direction models' `daily_metrics` rows for [start, end] (`upsert_daily_metrics`
    calls it, so every caller scores both kinds); returns the number of rows written."""
    db = db or get_db()
    metrics = direction_daily_metrics(start, end, model_ids, db=db)
    if metrics.empty:
        return 0
    records = metrics.astype(object).where(metrics.notna(), None).to_dict("records")
    with transaction(db):
        db["daily_metrics"].upsert_all(records, pk=("model_id", "date"))
    return len(records)


DIRECTION_PREFIXES = {"model": "", "always up": "always_up_", "same as today": "persistence_"}  # who -> column prefix


def better_baseline(summary: pd.DataFrame) -> pd.Series:
    """The row of `direction_live_summary` of the better baseline: the lower Brier score."""
    return summary[summary["who"] != "model"].sort_values("Brier", kind="stable").iloc[0]


def direction_live_summary(metrics: pd.DataFrame) -> pd.DataFrame:
    """The model and both baselines over the scored days of `metrics` (one direction model's daily rows),
    prediction-weighted: accuracy %, Brier, log loss and the days counted (what Monitoring shows)."""
    done = metrics.dropna(subset=["brier"])
    weights = done["n_predictions"].to_numpy(dtype=float)
    rows = []
    for who, prefix in DIRECTION_PREFIXES.items():
        average = {name: float(np.average(done[f"{prefix}{name}"], weights=weights)) if len(done) else float("nan")
                   for name in ("accuracy", "brier", "log_loss")}
        rows.append({"who": who, "accuracy %": average["accuracy"], "Brier": average["brier"],
                     "log loss": average["log_loss"], "days": int(done["date"].nunique())})
    return pd.DataFrame(rows)


def direction_calls(model_id: str, db: sqlite_utils.Database | None = None) -> tuple[int, int]:
    """(days a direction model called "up", days it served a P(up)): a model that calls one side every day is
    acting as "always up" (or down), whatever its features; its accuracy then equals that baseline's."""
    db = db or get_db()
    up, served = db.execute("SELECT COALESCE(SUM(p_up >= 0.5), 0), COUNT(*) FROM predictions "
                            "WHERE model_id = ? AND served = 1 AND p_up IS NOT NULL", [model_id]).fetchone()
    return int(up), int(served)


def calls_in_words(up: int, served: int) -> str:
    """"called up on 253 of 253 days (always up)", "called up on 120 of 253 days"."""
    if served == 0:
        return "no P(up) served yet"
    side = " (always up)" if up == served else " (always down)" if up == 0 else ""
    return f"called up on {up} of {served} days{side}"


def one_sided_warning(model_id: str | None, db: sqlite_utils.Database | None = None) -> str | None:
    """Words when a direction model made the same call on every served day: whatever its features say, it is
    acting as "always up" (or down), and its accuracy is that baseline's by construction. None otherwise."""
    db = db or get_db()
    row = db.execute("SELECT model_type FROM models WHERE model_id = ?", [model_id]).fetchone() if model_id else None
    if row is None or row[0] != DIRECTION_TYPE:
        return None
    up, served = direction_calls(model_id, db)
    if served < 2 or 0 < up < served:
        return None
    side, stayed = ("up", "above") if up else ("down", "below")
    return (f"{model_id} called {side} on every one of its {served} served days: it is acting as \"always {side}\" "
            f"(its P(up) stayed {stayed} 50 % every day), so its accuracy is that baseline's by construction. Whether "
            "its probabilities add anything shows in its Brier score and log loss against the baselines (Monitoring, "
            "Accuracy tab); a model that should call both ways needs retraining or other features.")
