"""The model-level drift report: performance, concept, prediction and streaming checks, severity, reasons (pure, no database).

Each check takes frames already read by the drift-checks service (`core.drift`) and returns a small
JSON-able dict; `DriftReport` gathers them with the feature table of `compare_frames`, and
`should_retrain` turns a report into the retraining trigger.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.config import Settings
from core.drift_kernels import MIN_SAMPLES, ks_test
from core.drift_stats import FrameComparison, compare_frames
from core.text import to_json

SEVERITIES = ("none", "moderate", "significant", "critical")
MIN_PERF_SAMPLES = 10  # predictions with actuals needed before the performance check speaks
VOL_RATIO_LIMIT = 1.5  # realised volatility x1.5 (or /1.5) with a significant Levene test = concept drift
# A report keeps the last 90 trading days of its error stream (the current window and the two before it: what the
# Drift page draws) and the detections among them: the whole stream grows with every day since deployment and,
# stored with every check, made each report ~100 KB and the table grow with the square of the days.
STREAM_KEEP_DAYS = 90


@dataclass
class DriftReport:
    """Everything one drift check found; `to_dict` / `from_dict` round-trip it through JSON.

    `reference` and `current` (the two feature windows) ride along for the page's overlays but are
    not serialised.
    """

    model_id: str
    as_of: str
    window_days: int
    overall_drift: bool
    severity: str
    reasons: list[str]
    features: pd.DataFrame
    performance: dict
    concept: dict
    prediction: dict
    streaming: dict
    dataset: dict = field(default_factory=dict)
    sequential: list = field(default_factory=list)  # current alarms of the sequential detectors (core/drift_watch.py)
    reference: pd.DataFrame | None = field(default=None, repr=False)
    current: pd.DataFrame | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        features = self.features.astype(object).where(self.features.notna(), None)
        return {
            "model_id": self.model_id, "as_of": self.as_of, "window_days": int(self.window_days),
            "overall_drift": bool(self.overall_drift), "severity": self.severity, "reasons": list(self.reasons),
            "features": features.to_dict("records"), "performance": self.performance, "concept": self.concept,
            "prediction": self.prediction, "streaming": self.streaming, "dataset": self.dataset,
            "sequential": self.sequential,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DriftReport":
        features = pd.DataFrame(data.get("features") or [], columns=FEATURE_TABLE_COLUMNS)
        features["note"] = features["note"].fillna("")  # reports stored before the column existed
        for column in ("psi", "ks_stat", "p_value", "wasserstein", "psi_p_value", "out_of_range", "missing_ref", "missing_cur"):
            features[column] = pd.to_numeric(features[column], errors="coerce")
        return cls(
            model_id=data["model_id"], as_of=data["as_of"], window_days=int(data["window_days"]),
            overall_drift=bool(data["overall_drift"]), severity=data["severity"], reasons=list(data["reasons"]),
            features=features, performance=data.get("performance", {}), concept=data.get("concept", {}),
            prediction=data.get("prediction", {}), streaming=data.get("streaming", {}), dataset=data.get("dataset", {}),
            sequential=data.get("sequential", []),
        )

    def to_json(self) -> str:
        return to_json(self.to_dict())


FEATURE_TABLE_COLUMNS = ["feature", "psi", "ks_stat", "p_value", "wasserstein", "verdict", "psi_p_value",
                         "out_of_range", "missing_ref", "missing_cur", "new_categories", "note"]



def performance_check(recent: pd.DataFrame, validation: pd.DataFrame, settings: Settings) -> dict:
    """Recent MAE vs validation MAE. The decision uses the scale-free MAPE ratio, because $ errors grow
    with the price level: a stock that doubled since validation would show "+100%" in $ with the same skill."""
    validation_mae = float(np.mean(np.abs(validation["predicted_close"] - validation["actual_close"])))
    validation_mape = float(np.mean(np.abs(validation["predicted_close"] - validation["actual_close"]) / validation["actual_close"]) * 100)
    result = {"n": int(len(recent)), "validation_mae": validation_mae, "validation_mape": validation_mape,
              "recent_mae": None, "recent_mape": None, "recent_naive_mae": None, "recent_skill": None,
              "change_pct": None, "degraded": False, "threshold_pct": settings.drift_perf_threshold * 100,
              "note": ""}
    if len(recent) < MIN_PERF_SAMPLES:
        result["note"] = f"{len(recent)} prediction(s) with actuals in the window; {MIN_PERF_SAMPLES} needed to judge performance"
        return result
    recent_mae, naive_mae = float(recent["abs_error"].mean()), float(recent["naive_abs_error"].mean())
    recent_mape = float(recent["ape"].mean() * 100)
    change = (recent_mape / validation_mape - 1) * 100 if validation_mape > 0 else float("nan")
    result.update(recent_mae=recent_mae, recent_mape=recent_mape, recent_naive_mae=naive_mae,
                  recent_skill=1 - recent_mae / naive_mae if naive_mae > 0 else None, change_pct=change,
                  degraded=bool(np.isfinite(change) and change > settings.drift_perf_threshold * 100))
    return result


def concept_check(reference_returns: np.ndarray, current_returns: np.ndarray, recent: pd.DataFrame,
                  validation: pd.DataFrame, settings: Settings) -> dict:
    """Did the market or the model's relation to it change? Volatility (Brown-Forsythe / Levene with
    median centring), the return distribution (KS), and the bias of the errors (Welch t-test)."""
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
    alpha = settings.drift_ks_alpha
    volatility = volatility_check(reference_returns, current_returns, alpha)
    ret_ks, ret_p = ks_test(reference_returns, current_returns)
    bias_validation = float((validation["pred_return"] - validation["actual_return"]).mean())
    bias_recent, bias_p = None, None
    if len(recent) >= MIN_PERF_SAMPLES:
        bias_recent = float(recent["error"].mean())
        bias_p = float(stats.ttest_ind(recent["error"], validation["pred_return"] - validation["actual_return"],
                                       equal_var=False).pvalue)
    vol_drift = volatility["volatility_drift"]
    bias_drift = bool(bias_p is not None and bias_p < alpha)
    return {**volatility, "returns_ks_stat": ret_ks, "returns_p_value": ret_p,
            "error_bias_validation": bias_validation, "error_bias_recent": bias_recent, "bias_p_value": bias_p,
            "volatility_drift": vol_drift, "bias_drift": bias_drift, "drift": vol_drift or bias_drift}


def volatility_check(reference_returns: np.ndarray, current_returns: np.ndarray, alpha: float) -> dict:
    """Realised volatility change: ratio of standard deviations, Brown-Forsythe (Levene, median) p-value;
    drift when significant at `alpha` and the ratio is beyond x1.5 either way."""
    from scipy import stats  # lazy: scipy.stats is ~2 s of a page's first visit (issue 16)
    vol_ref, vol_cur = float(np.std(reference_returns, ddof=1)), float(np.std(current_returns, ddof=1))
    vol_ratio = vol_cur / vol_ref if vol_ref > 0 else float("nan")
    vol_p = float(stats.levene(reference_returns, current_returns, center="median").pvalue)
    drifted = bool(vol_p < alpha and (vol_ratio >= VOL_RATIO_LIMIT or vol_ratio <= 1 / VOL_RATIO_LIMIT))
    return {"volatility_reference": vol_ref, "volatility_current": vol_cur, "volatility_ratio": vol_ratio,
            "volatility_p_value": vol_p, "volatility_drift": drifted}


def prediction_check(recent_predictions: np.ndarray, validation: pd.DataFrame, settings: Settings) -> dict:
    """The model's recent predicted returns vs its validation predictions (PSI and KS)."""
    if len(recent_predictions) < MIN_SAMPLES:
        return {"n": int(len(recent_predictions)), "psi": None, "ks_stat": None, "p_value": None, "drift": False,
                "note": f"{len(recent_predictions)} prediction(s) in the window; {MIN_SAMPLES} needed"}
    frame = compare_frames(pd.DataFrame({"pred_return": validation["pred_return"].to_numpy()}),
                           pd.DataFrame({"pred_return": recent_predictions}), settings=settings, serial=True)
    row = frame.features.iloc[0]
    return {"n": int(len(recent_predictions)), "psi": row["psi"], "ks_stat": row["ks_stat"], "p_value": row["p_value"],
            "psi_p_value": row["psi_p_value"],
            "drift": bool(row["verdict"] == "drift"), "note": ""}


def streaming_check(errors: pd.DataFrame, validation: pd.DataFrame, window_start: str) -> dict:
    """ADWIN and Page-Hinkley (river, default parameters) over the daily absolute log-return errors in units
    of the validation mean absolute error, so the same defaults mean the same thing for every ticker.
    Page-Hinkley watches increases only (mode="up"): a model whose error falls is not a problem. The detectors
    run over the whole stream; the result keeps its last `STREAM_KEEP_DAYS` days and their detections."""
    from river.drift import ADWIN, PageHinkley  # third-party, slow to import; only this check needs it

    scale = float(np.mean(np.abs(validation["pred_return"] - validation["actual_return"])))
    daily = errors["error"].abs().groupby(errors["as_of"]).mean()  # one vectorised pass, not a Python call per day
    stream = daily / scale if scale > 0 else daily
    adwin, page_hinkley = ADWIN(), PageHinkley(mode="up")
    adwin_days, ph_days = [], []
    for day, value in stream.items():  # river detectors consume one observation at a time
        adwin.update(value)
        page_hinkley.update(value)
        if adwin.drift_detected:
            adwin_days.append(day)
        if page_hinkley.drift_detected:
            ph_days.append(day)
    in_window = [d for d in adwin_days + ph_days if d >= window_start]
    shown = stream.iloc[-STREAM_KEEP_DAYS:]  # what the page draws; the detectors above saw the whole stream
    since = shown.index[0] if len(shown) else window_start
    return {"n": int(len(stream)), "scale": scale, "adwin": [d for d in adwin_days if d >= since],
            "page_hinkley": [d for d in ph_days if d >= since], "n_detections": len(adwin_days) + len(ph_days),
            "in_window": bool(in_window), "stream": {"date": list(shown.index), "value": shown.round(4).tolist()}}


def overall_severity(dataset_drift: bool, performance: dict, concept: dict, prediction: dict, streaming: dict,
              features: pd.DataFrame) -> str:
    """critical: inputs drifted AND the error rose; significant: either; moderate: a weaker signal."""
    degraded = performance["degraded"]
    if dataset_drift and degraded:
        return "critical"
    if dataset_drift or degraded:
        return "significant"
    weaker = (concept["drift"] or prediction["drift"] or streaming["in_window"]
              or bool((features["verdict"] == "drift").any()))
    return "moderate" if weaker else "none"


def report_reasons(comparison: FrameComparison, performance: dict, concept: dict, prediction: dict,
             streaming: dict, settings: Settings) -> list[str]:
    reasons = []
    drifted = comparison.features[comparison.features["verdict"] == "drift"].sort_values("psi", ascending=False)
    if comparison.n_drifted:
        reasons.append(f"{comparison.n_drifted} of {comparison.n_features} features drifted "
                       f"({comparison.drifted_share:.0%}; dataset drift at >= {settings.drift_share_threshold:.0%})")
    for row in drifted.head(5).itertuples():
        if row.note:
            reasons.append(f"{row.feature}: {row.note}")
        elif row.out_of_range > 0:
            reasons.append(f"{row.out_of_range:.0%} of {row.feature} values far outside the training range "
                           "(beyond min/max widened by the range: a scale or units change?)")
        elif np.isfinite(row.psi) and np.isfinite(row.p_value):
            reasons.append(f"PSI {row.psi:.2f} on {row.feature} >= {settings.drift_psi_threshold:g} (KS p={row.p_value:.1e}, PSI p={row.psi_p_value:.3f})")
        elif row.new_categories:
            reasons.append(f"new categories in {row.feature}: {', '.join(map(str, row.new_categories[:5]))}")
        else:
            reasons.append(f"missing values in {row.feature} rose from {row.missing_ref:.0%} to {row.missing_cur:.0%}")
    if performance["degraded"]:
        reasons.append(f"live skill {performance['live_skill']:+.3f} vs validation {performance['validation_skill']:+.3f} "
                       f"over {performance['skill_days']} scored days (skill vs naive on the same days)")
    if concept["volatility_drift"]:
        reasons.append(f"volatility x{concept['volatility_ratio']:.2f} vs training (Levene p={concept['volatility_p_value']:.1e})")
    if concept["bias_drift"]:
        reasons.append(f"error bias shifted to {concept['error_bias_recent']:+.4f} from {concept['error_bias_validation']:+.4f} "
                       f"log return (t-test p={concept['bias_p_value']:.1e})")
    if prediction["drift"]:
        reasons.append(f"predictions drifted vs validation (PSI {prediction['psi']:.2f}, KS p={prediction['p_value']:.1e})")
    if streaming["in_window"]:
        days = sorted(set(streaming["adwin"] + streaming["page_hinkley"]))
        reasons.append(f"error stream change detected (ADWIN / Page-Hinkley) on {', '.join(days[-3:])}")
    return reasons




# --- the sequential alarms in words (records of core/drift_watch.py; pure rules, no database) -------------

SEVERITY_ORDER = ("none", "moderate", "significant", "critical")
RANGE = "feature_range"  # the detector of values far outside the training range
RETRAIN_DETECTORS = ("error", "returns_mean", "returns_variance")  # data-quality alarms call for a fix, not a retrain


def what_moved(record: Mapping) -> str:
    """What an alarm says moved, in words: "the volatility of daily returns rose", "macd above the training range"."""
    word = "rose" if record["direction"] == "up" else "fell"
    if record["detector"] == RANGE:
        word = "above" if record["direction"] == "up" else "below"
        return f"{record['stream']} {word} the training range"
    if record["detector"] == "feature_scale":
        return f"the day-to-day change of {record['stream']} {'grew' if record['direction'] == 'up' else 'shrank'}"
    return f"the {record['signal']} {word}"


def reason(record: Mapping) -> str:
    """The verdict's line: "changed since <onset>: <signal> (<detector>, statistic X vs threshold H; alarm on
    <first alarm>[, latest <day>])", the same dates as `in_words` (a record without episode dates: its own day)."""
    first = record.get("first_alarm_day", record["alarm_day"])
    latest = f", latest {record['alarm_day']}" if record["alarm_day"] != first else ""
    return (f"changed since {record['onset_day']}: {what_moved(record)} ({record['detector']}, statistic "
            f"{record['statistic']:.2f} vs threshold {record['threshold']:.2f}; alarm on {first}{latest})")


def days_later(record: Mapping) -> str:
    """How long after the onset the first alarm came, in trading days: "the same day", "1 trading day later".
    (`delay_days` counts both ends, 1 = the same day, as the bench's detection delays do.)"""
    later = int(record["delay_days"]) - 1
    return "the same day" if later <= 0 else f"{later} trading day{'s' if later != 1 else ''} later"


def in_words(records: Sequence[Mapping]) -> str:
    """One sentence for the page, each detector with its own dates, e.g. "Changed since Tuesday 28 August 2012
    (the earliest onset): the model error / its validation mean rose (since 2012-08-28, alarm on 2012-08-30,
    3 trading days later; latest 2012-09-05); the volatility of daily returns rose (since ...)." ("" without
    alarms). Ordered by onset, so the first named is the change that started first."""
    if not records:
        return ""
    ordered = sorted(records, key=lambda r: (r["onset_day"], r["detector"]))
    onset = pd.Timestamp(ordered[0]["onset_day"])

    def dated(r: Mapping) -> str:
        latest = f"; latest {r['alarm_day']}" if r["alarm_day"] != r["first_alarm_day"] else ""
        return f"{what_moved(r)} (since {r['onset_day']}, alarm on {r['first_alarm_day']}, {days_later(r)}{latest})"

    earliest = " (the earliest onset)" if len(ordered) > 1 else ""
    return f"Changed since {onset:%A} {onset.day} {onset:%B %Y}{earliest}: " + "; ".join(dated(r) for r in ordered) + "."


def combine(severity: str, reasons: list[str], records: Sequence[Mapping]) -> tuple[str, list[str]]:
    """The verdict with the sequential alarms: severity at least "significant" when one is current, and one
    reason line per alarm (the window test says what changed, the alarms say when)."""
    if not records:
        return severity, list(reasons)
    severity = max(severity, "significant", key=SEVERITY_ORDER.index)
    return severity, list(reasons) + [reason(r) for r in records]


def retrain_trigger(records: Sequence[Mapping], live_change_pct: float | None = None) -> str | None:
    """Why the sequential alarms call for retraining, or None: the model's error rose (always), or the returns
    changed (mean or volatility) unless live error is at or below validation. A data-quality alarm (feature
    scale, range) calls for fixing the data, not for a retrain."""
    error = [r for r in records if r["detector"] == "error" and r["direction"] == "up"]
    if error:
        return f"the model's error rose: {reason(error[0])}"
    returns = [r for r in records if r["detector"] in RETRAIN_DETECTORS[1:]]
    if returns and not (live_change_pct is not None and live_change_pct <= 0):
        return f"the market changed: {reason(returns[0])}"
    return None


def should_retrain(report: DriftReport) -> tuple[bool, str]:
    """Retrain when the error rose past the threshold, or the inputs drifted (the model is extrapolating)
    unless live error shows it still does at least as well as in validation."""
    performance = report.performance
    if performance.get("degraded"):
        return True, "; ".join(report.reasons)
    trigger = retrain_trigger(report.sequential, performance.get("change_pct"))  # the alarms say when it changed
    if trigger:
        return True, trigger
    if report.dataset.get("dataset_drift"):
        change = performance.get("change_pct")
        if change is not None and change <= 0:
            return False, (f"inputs drifted but live error is {change:+.0f}% vs validation: "
                           "monitor, no retraining needed yet")
        return True, "; ".join(report.reasons)
    if report.severity == "moderate":
        return False, "weak signals only (" + "; ".join(report.reasons) + "): monitor"
    return False, "no drift detected"


