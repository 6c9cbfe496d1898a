"""Drift checks: owns `drift_checks`; reads a model's windows and prediction log, runs the pure checks, stores the report.

`check_model` builds the two windows (reference = the model's training window features, current =
the last `window_days` trading days up to `as_of`), runs `compare_frames` (`core.drift_stats`) and
the model checks (`core.drift_report`) and stores one `DriftReport` per call in `drift_checks`.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import sqlite_utils

from core import drift_watch
from core.config import get_settings
from core.drift_kernels import MIN_SAMPLES, DriftInputError, ks_test
from core.drift_report import (FEATURE_TABLE_COLUMNS, MIN_PERF_SAMPLES, DriftReport, combine, report_reasons, overall_severity,
                               concept_check, performance_check, prediction_check, streaming_check, volatility_check)
from core.drift_stats import check_budget, compare_frames
from core.features import build_features
from core.market import MarketDataError, PriceCache, last_trading_day, load_prices
from core.metrics import live_days, skill_drop
from core.predict import prediction_log
from core.registry import DIRECTION_TYPE, get_model, validation_predictions
from core.store import get_db, to_json, transaction, utc_now
from core.text import json_safe

log = logging.getLogger(__name__)


class BeyondDataError(DriftInputError):
    """An as_of after the last trading day the data has: nothing is computed or stored for such a day."""


def _day(value) -> str:
    return f"{pd.Timestamp(value):%Y-%m-%d}"

def model_windows(model: dict, as_of, window_days: int, db: sqlite_utils.Database | None = None,
                  cache: PriceCache | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current) feature frames: the training window, and the last `window_days` days to `as_of`."""
    return windows_from_prices(model, window_prices(model, as_of, db=db, cache=cache), as_of, window_days)


def window_prices(model: dict, as_of, db: sqlite_utils.Database | None = None,
                  cache: PriceCache | None = None) -> pd.DataFrame:
    """The prices both windows are built from: the training window (with its feature warm-up) to `as_of`."""
    warmup_start = pd.Timestamp(model["train_start"]) - pd.Timedelta(days=120)  # > 50 trading days: the longest feature window
    return load_prices(model["symbol"], start=warmup_start, end=max(pd.Timestamp(as_of), pd.Timestamp(model["train_end"])),
                       db=db or get_db(), cache=cache)


def windows_from_prices(model: dict, prices: pd.DataFrame, as_of, window_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current) feature frames from `prices` (`window_prices`): pure, no database."""
    columns = model["features"]
    if window_days < MIN_SAMPLES:
        raise DriftInputError(f"window_days must be at least {MIN_SAMPLES}, got {window_days}.")
    as_of = pd.Timestamp(as_of)
    train_start, train_end = pd.Timestamp(model["train_start"]), pd.Timestamp(model["train_end"])
    features = build_features(prices, model["symbol"])
    reference = features.loc[train_start:train_end, columns]
    current = features.loc[(features.index > train_end) & (features.index <= as_of), columns].iloc[-window_days:]
    if len(current) < MIN_SAMPLES:
        raise DriftInputError(
            f"{model['model_id']}: only {len(current)} trading day(s) after its training window "
            f"(ends {train_end:%Y-%m-%d}) up to {as_of:%Y-%m-%d}; pick a later date (at least {MIN_SAMPLES} days needed)."
        )
    return reference, current


def compare_windows(model: dict, prices: pd.DataFrame, as_of, window_days: int, settings) -> tuple:
    """The heavy, pure part of a drift check (a cluster task): the two windows and their feature comparison.
    Plain inputs (the model's row, its `window_prices`, a settings snapshot), plain result; `check_model` does the rest."""
    reference, current = windows_from_prices(model, prices, as_of, window_days)
    return reference, current, compare_frames(reference, current, settings=settings, serial=True,
                                              alpha=check_budget(settings).window)


def data_ends(symbols: list[str], db: sqlite_utils.Database | None = None,
              cache: PriceCache | None = None) -> dict[str, pd.Timestamp]:
    """The last trading day the data has for each ticker: "today" for every check and cycle (with live
    yfinance data that is today's close once it is in; on the bundled data, the file's last day)."""
    return {symbol: last_trading_day(symbol, db=db, cache=cache) for symbol in symbols}


def check_within_data(as_of, ends: dict[str, pd.Timestamp]) -> pd.Timestamp:
    """`as_of` as a Timestamp, or BeyondDataError when it is after the last day of all of `ends`
    (ticker -> last data day), naming that day: nothing may be computed or stored for a day with no data."""
    as_of = pd.Timestamp(as_of)
    if not ends:
        return as_of
    last = max(ends.values())
    if as_of.normalize() > last:
        per_ticker = "" if len(ends) == 1 else " (" + ", ".join(f"{s} {d:%Y-%m-%d}" for s, d in sorted(ends.items())) + ")"
        tickers = ", ".join(sorted(ends))
        raise BeyondDataError(
            f"{as_of:%Y-%m-%d} is after the last trading day in the data for {tickers}: {last:%Y-%m-%d}{per_ticker}. "
            f"Nothing was computed or stored; pick {last:%Y-%m-%d} or earlier (or refresh prices for newer days).")
    return as_of


def as_of_bounds(model_id: str, window_days: int, db: sqlite_utils.Database | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(first, last) day a check of `model_id` can be made for: first = the `window_days`-th trading day
    after its training window (a full current window; the last day if the data has fewer), last = the
    last trading day of its ticker's data. The Drift page bounds its date picker with these."""
    db = db or get_db()
    model = get_model(model_id, db=db)
    train_end = pd.Timestamp(model["train_end"])
    days = load_prices(model["symbol"], start=train_end, db=db).index
    after = days[days > train_end]
    last = days[-1]
    first = after[min(max(int(window_days), MIN_SAMPLES), len(after)) - 1] if len(after) else last
    return first, last


def default_as_of(model_id: str, db: sqlite_utils.Database | None = None) -> pd.Timestamp:
    """Where the live system stands for this model: its last logged prediction, else the last trading day."""
    db = db or get_db()
    row = db.execute("SELECT MAX(as_of) FROM predictions WHERE model_id = ?", [model_id]).fetchone()
    if row and row[0]:
        return pd.Timestamp(row[0])
    return load_prices(get_model(model_id, db=db)["symbol"], db=db).index[-1]


def _model_errors(model_id: str, as_of, db: sqlite_utils.Database, since=None) -> pd.DataFrame:
    """Served predictions from `since` (the model's train_end: none is served before) up to `as_of` with known
    actuals, with log-return errors (scale-free). The bound lets the read seek the (model, day) index range."""
    # shadow predictions count too: they are this model's forecasts, only not shown to the user
    log_frame = prediction_log(model_id=model_id, start=since, end=as_of, served_only=False,
                               db=db).dropna(subset=["actual_close"])
    log_frame = log_frame[log_frame["target_date"] <= _day(as_of)]
    out = pd.DataFrame({
        "as_of": log_frame["as_of"].to_numpy(),
        "pred_return": np.log(log_frame["predicted_close"] / log_frame["last_close"]).to_numpy(),
        "actual_return": np.log(log_frame["actual_close"] / log_frame["last_close"]).to_numpy(),
        "abs_error": log_frame["abs_error"].to_numpy(),
        "naive_abs_error": log_frame["naive_abs_error"].to_numpy(),
        "ape": (log_frame["abs_error"] / log_frame["actual_close"]).to_numpy(),
    })
    out["error"] = out["pred_return"] - out["actual_return"]
    return out


def check_model(model_id: str, as_of=None, window_days: int | None = None,
                db: sqlite_utils.Database | None = None, store: bool = True, computed=None,
                cache: PriceCache | None = None) -> DriftReport:
    """Every drift check for `model_id` on `as_of` (default: where its prediction log stands).

    Reference = the model's training window features; current = the last `window_days` trading days
    up to `as_of`. Stores the report in `drift_checks` when `store`. `computed` is a handle whose
    `result()` is `report_from_inputs` for the same arguments, computed elsewhere (a cluster task). `cache`: the
    pass's `PriceCache` (the daily cycle's), so the ticker's prices are not read again for each window.
    """
    db = db or get_db()
    settings = get_settings()
    window_days = int(window_days or settings.drift_window_days)
    model = get_model(model_id, db=db)
    as_of = pd.Timestamp(as_of) if as_of is not None else default_as_of(model_id, db=db)
    check_within_data(as_of, data_ends([model["symbol"]], db=db, cache=cache))
    if computed is not None:
        report = computed.result()
    else:
        try:
            prices = window_prices(model, as_of, db=db, cache=cache)
        except MarketDataError as exc:
            raise DriftInputError(f"{model_id}: {exc}") from exc
        report = report_from_inputs(model, prices, as_of, window_days, *report_inputs(model, as_of, db, cache), settings)
    if store:
        store_report(report, db=db, cache=cache)
    log.info("drift check %s as of %s: %s (%d reasons)", model_id, report.as_of, report.severity, len(report.reasons))
    return report


def report_inputs(model: dict, as_of, db: sqlite_utils.Database,
                  cache: PriceCache | None = None) -> tuple[pd.DataFrame, pd.DataFrame, list[dict], dict | None]:
    """What a check reads besides prices: (scored, validation predictions, the sequential detectors' alarms (read
    after the cycle advanced them), the live-skill judgement). `scored` is a price model's scored predictions (from
    its train_end: the index) or a direction model's P(up) rows; the live-skill judgement (`metrics.skill_drop`: live
    skill vs naive against validation skill on the same days) is a price model's, None for a direction model."""
    model_id = model["model_id"]
    validation = validation_predictions(model_id)
    sequential = drift_watch.alarms(model_id, as_of, db=db, cache=cache)
    if model["model_type"] == DIRECTION_TYPE:
        return _served_probabilities(model_id, as_of, db), validation, sequential, None
    judged = skill_drop(live_days([model_id], as_of, db=db), model["metrics"].get("skill"))
    return _model_errors(model_id, as_of, db, since=model["train_end"]), validation, sequential, judged


def report_from_inputs(model: dict, prices: pd.DataFrame, as_of, window_days: int, scored: pd.DataFrame,
                       validation: pd.DataFrame, sequential: list[dict], judged: dict | None, settings) -> DriftReport:
    """The whole drift report from plain inputs (the model's row, its `window_prices`, `report_inputs`, a settings
    snapshot): pure, no database, so the daily cycle can run it as a cluster task."""
    model_id, as_of = model["model_id"], pd.Timestamp(as_of)
    budget = check_budget(settings)  # the window test and the sequential alarms share one false-alarm budget
    reference, current, comparison = compare_windows(model, prices, as_of, window_days, settings)
    window_start = _day(current.index[0])
    returns = np.log(prices.loc[reference.index[0] - pd.Timedelta(days=7):as_of, "close"]).diff()
    reference_returns = returns.loc[reference.index].dropna().to_numpy()
    current_returns = returns.loc[current.index].dropna().to_numpy()
    if model.get("model_type") == DIRECTION_TYPE:  # a classifier: its P(up) and scoring rules, not price errors
        performance, concept, prediction, streaming, own_reasons = classifier_checks(
            scored, window_start, validation, reference_returns, current_returns, settings)
    else:
        recent = scored[scored["as_of"] >= window_start]
        performance = performance_check(recent, validation, settings)
        # degraded = live skill vs naive credibly below validation skill on the same days (core.metrics), not $ or %
        # errors of a volatile live period against a calm validation one
        performance.update(degraded=judged["degraded"], live_skill=judged["live_skill"],
                           validation_skill=judged["validation_skill"], skill_drop=judged["drop"],
                           skill_days=judged["days"], skill_p_value=judged["p_value"])
        concept = concept_check(reference_returns, current_returns, recent, validation, settings)
        prediction = prediction_check(recent["pred_return"].to_numpy(), validation, settings)
        streaming = streaming_check(scored, validation, window_start)
        own_reasons = []
    severity = overall_severity(comparison.dataset_drift, performance, concept, prediction, streaming, comparison.features)
    reasons = own_reasons + report_reasons(comparison, {**performance, "degraded": performance["degraded"] and not own_reasons},
                                           {**concept, "bias_drift": concept["bias_drift"] and not own_reasons},
                                           prediction, streaming, settings)
    severity, reasons = combine(severity, reasons, sequential)  # the window test says what changed, the alarms when
    features = comparison.features.sort_values("psi", ascending=False, na_position="last").reset_index(drop=True)
    return DriftReport(
        model_id=model_id, as_of=_day(as_of), window_days=window_days,
        overall_drift=severity in ("significant", "critical"), severity=severity, reasons=reasons,
        features=features[FEATURE_TABLE_COLUMNS], performance=json_safe(performance), concept=json_safe(concept),
        prediction=json_safe(prediction), streaming=json_safe(streaming), sequential=json_safe(sequential),
        dataset=json_safe({"n_features": comparison.n_features, "n_drifted": comparison.n_drifted,
                        "drifted_share": comparison.drifted_share, "dataset_drift": comparison.dataset_drift,
                        "alpha_corrected": comparison.alpha_corrected, "alpha": budget.window,
                        "rule": f"{comparison.rule}; {budget.describe()}",
                        "reference_start": _day(reference.index[0]), "reference_end": _day(reference.index[-1]),
                        "current_start": window_start, "current_end": _day(current.index[-1])}),
        reference=reference, current=current,
    )


# --- direction models: drift of P(up) and of its scoring rules ------------------------------------------

def _served_probabilities(model_id: str, as_of, db: sqlite_utils.Database) -> pd.DataFrame:
    """The model's P(up) rows (served and shadow) made up to `as_of`: as_of, p_up, and `up` (1 / 0) where the next
    close was known on `as_of` (NaN otherwise)."""
    frame = prediction_log(model_id=model_id, end=as_of, served_only=False, db=db, kind="direction")
    known = frame["actual_close"].notna() & (frame["target_date"] <= _day(as_of))
    up = (frame["actual_close"].astype(float) > frame["last_close"].astype(float)).astype(float).where(known)
    return pd.DataFrame({"as_of": frame["as_of"].to_numpy(), "p_up": frame["p_up"].astype(float).to_numpy(),
                         "up": up.to_numpy()})


def classifier_checks(served: pd.DataFrame, window_start: str, validation: pd.DataFrame, reference_returns: np.ndarray,
                      current_returns: np.ndarray, settings) -> tuple[dict, dict, dict, dict, list[str]]:
    """(performance, concept, prediction, streaming, reasons) of a direction model, in the shapes of the price checks.

    Reference = its walk-forward validation P(up) and labels. Prediction drift: the window's P(up) against the
    validation P(up) (the same three tests as a feature). Performance: Brier score and accuracy of the scored
    P(up) in the window against validation; degraded when Brier rose, or accuracy fell, by more than the
    performance threshold (relative). Concept: the market's volatility and returns as for any model, and the
    calibration bias (mean P(up) - outcome) by a Welch t-test. Streaming: ADWIN / Page-Hinkley on the daily
    |P(up) - outcome|, in units of its validation mean. The reasons say it in classifier words.
    """
    from scipy import stats  # lazy: only a check needs it

    recent = served[served["as_of"] >= window_start]
    scored = recent.dropna(subset=["up"])
    p_val, y_val = validation["p_up"].to_numpy(dtype=float), validation["label"].to_numpy(dtype=float)
    brier_val, accuracy_val = float(np.mean((p_val - y_val) ** 2)), float(np.mean((p_val >= 0.5) == (y_val == 1)))
    threshold = settings.drift_perf_threshold
    performance = {"kind": "direction", "n": int(len(scored)), "validation_brier": brier_val,
                   "validation_accuracy": accuracy_val, "recent_brier": None, "recent_accuracy": None,
                   "recent_mae": None, "change_pct": None, "accuracy_change_pct": None, "degraded": False,
                   "threshold_pct": threshold * 100, "note": ""}
    concept = {**volatility_check(reference_returns, current_returns, settings.drift_ks_alpha),
               "error_bias_validation": float(np.mean(p_val - y_val)), "error_bias_recent": None, "bias_p_value": None,
               "bias_drift": False}
    reasons = []
    if len(scored) < MIN_PERF_SAMPLES:
        performance["note"] = f"{len(scored)} scored P(up) in the window; {MIN_PERF_SAMPLES} needed to judge performance"
    else:
        p, y = scored["p_up"].to_numpy(), scored["up"].to_numpy()
        brier, accuracy = float(np.mean((p - y) ** 2)), float(np.mean((p >= 0.5) == (y == 1)))
        change = (brier / brier_val - 1) * 100 if brier_val > 0 else float("nan")
        accuracy_change = (accuracy / accuracy_val - 1) * 100 if accuracy_val > 0 else float("nan")
        degraded = bool(change > threshold * 100 or accuracy_change < -threshold * 100)
        performance.update(recent_brier=brier, recent_accuracy=accuracy, change_pct=change,
                           accuracy_change_pct=accuracy_change, degraded=degraded)
        bias_p = float(stats.ttest_ind(p - y, p_val - y_val, equal_var=False).pvalue)
        concept.update(error_bias_recent=float(np.mean(p - y)), bias_p_value=bias_p,
                       bias_drift=bool(bias_p < settings.drift_ks_alpha))
        if degraded:
            reasons.append(f"Brier {brier:.4f} vs {brier_val:.4f} on validation ({change:+.0f}%), accuracy {accuracy:.1%} "
                           f"vs {accuracy_val:.1%}: beyond the {threshold:.0%} threshold")
        if concept["bias_drift"]:
            reasons.append(f"P(up) is off by {concept['error_bias_recent']:+.3f} on average (validation "
                           f"{concept['error_bias_validation']:+.3f}, t-test p={bias_p:.1e}): its calibration moved")
    concept["returns_ks_stat"], concept["returns_p_value"] = ks_test(reference_returns, current_returns)
    concept["drift"] = bool(concept["volatility_drift"] or concept["bias_drift"])
    prediction = prediction_check(recent["p_up"].to_numpy(), validation.assign(pred_return=validation["p_up"]), settings)
    errors = pd.DataFrame({"as_of": served["as_of"], "error": served["p_up"] - served["up"]}).dropna()
    streaming = streaming_check(errors, validation.assign(pred_return=validation["p_up"], actual_return=validation["label"]),
                                window_start) | {"unit": "|P(up) − outcome| / validation mean"}
    return performance, concept, prediction, streaming, reasons


# --- storage -------------------------------------------------------------------------------------------

def store_report(report: DriftReport, db: sqlite_utils.Database | None = None, cache: PriceCache | None = None) -> int:
    """Append the report to `drift_checks` (full JSON); returns the row id. A report dated after the
    last trading day of its ticker's data is refused (BeyondDataError): no check exists for such a day."""
    db = db or get_db()
    check_within_data(report.as_of, data_ends([get_model(report.model_id, db=db)["symbol"]], db=db, cache=cache))
    with transaction(db):
        table = db["drift_checks"]
        table.insert({"model_id": report.model_id, "as_of": report.as_of, "window_days": report.window_days,
                      "overall_drift": int(report.overall_drift), "severity": report.severity,
                      "reasons_json": to_json(report.reasons), "report_json": report.to_json(),
                      "created_at": utc_now()})
        return int(table.last_pk)


def drift_history(model_id: str, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """Stored checks of `model_id`, oldest first: id, as_of, window_days, overall_drift, severity, reasons,
    drifted_share, created_at."""
    db = db or get_db()
    # the share is read by SQLite (a report is ~100 KB of JSON, mostly its error stream); only a report SQLite
    # cannot read (a NaN written by Python's json) comes back whole, to be parsed in Python
    rows = list(db.query(
        "SELECT id, as_of, window_days, overall_drift, severity, reasons_json, created_at, "
        "CASE WHEN json_valid(report_json) THEN json_extract(report_json, '$.dataset.drifted_share') END AS drifted_share, "
        "CASE WHEN json_valid(report_json) THEN NULL ELSE report_json END AS raw "
        "FROM drift_checks WHERE model_id = ? ORDER BY as_of, id", [model_id]))
    columns = ["id", "as_of", "window_days", "overall_drift", "severity", "reasons", "drifted_share", "created_at"]
    records = [{**{k: r[k] for k in ("id", "as_of", "window_days", "severity", "created_at")},
                "overall_drift": bool(r["overall_drift"]), "reasons": json.loads(r["reasons_json"] or "[]"),
                "drifted_share": r["drifted_share"] if r["raw"] is None
                else json.loads(r["raw"]).get("dataset", {}).get("drifted_share")} for r in rows]
    return pd.DataFrame(records, columns=columns)


def psi_history(model_id: str, db: sqlite_utils.Database | None = None) -> pd.DataFrame:
    """PSI per feature (columns) per stored check (rows, indexed by as_of; the last check of a day wins)."""
    db = db or get_db()
    rows = db.query("SELECT as_of, report_json FROM drift_checks WHERE model_id = ? ORDER BY as_of, id", [model_id])
    series = {r["as_of"]: {f["feature"]: f["psi"] for f in json.loads(r["report_json"]).get("features", [])} for r in rows}
    return pd.DataFrame.from_dict(series, orient="index").astype(float).sort_index()


def latest_check(model_id: str, db: sqlite_utils.Database | None = None) -> dict | None:
    """The newest stored report of `model_id` (by as_of, then insertion) as a dict, or None."""
    db = db or get_db()
    row = db.execute("SELECT report_json FROM drift_checks WHERE model_id = ? ORDER BY as_of DESC, id DESC LIMIT 1",
                     [model_id]).fetchone()
    return json.loads(row[0]) if row else None
