"""Daily metrics: owns `daily_metrics`; per-day accuracy, volume and latency of every model, live skill.

`daily_metrics` has one row per (model, day the predictions were made): its volume and latency
percentiles are known at once, its error columns (MAE / RMSE in $, MAPE and directional accuracy in
%, and the naive baseline's MAE on the same predictions) fill in once the next close is known. The
daily cycle (`core.cycle`) therefore recomputes the last `METRICS_LOOKBACK_DAYS` calendar days each
run (an upsert, so running a day twice changes nothing). Also the read-only views the Monitoring
page draws: interval widths from the prediction log and the largest PSI of each stored drift check.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from core.store import get_db, transaction, where_clause

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
    clauses, params = ["as_of >= ?", "as_of <= ?"], [_day(start), _day(end)]
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
    if metrics.empty:
        return 0
    records = metrics.astype(object).where(metrics.notna(), None).to_dict("records")
    with transaction(db):
        db["daily_metrics"].upsert_all(records, pk=("model_id", "date"))
    return len(records)


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


def live_skill(metrics: pd.DataFrame) -> float:
    """1 - MAE_model / MAE_naive over the given metric rows (prediction-weighted), NaN without actuals."""
    done = metrics.dropna(subset=["mae", "naive_mae"])
    if done.empty:
        return float("nan")
    weights = done["n_predictions"].to_numpy(dtype=float)
    naive = float(np.sum(done["naive_mae"].to_numpy() * weights))
    return float(1 - np.sum(done["mae"].to_numpy() * weights) / naive) if naive > 0 else float("nan")


def interval_widths(model_id: str | None = None, symbol: str | None = None, start=None, end=None,
                    db: sqlite_utils.Database | None = None) -> pd.Series:
    """Prediction-interval widths in % of the last close (two columns of the log, no error columns); pages pass
    a window (`recent_interval_widths`), so a load never reads the whole history."""
    db = db or get_db()
    clauses, params = ["served = 1"], []
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
