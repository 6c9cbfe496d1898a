"""A drift report in words a reader can reconcile with its numbers: why each feature got its verdict.

`core.drift` decides; this module explains the decision without changing it. A feature drifts when
three tests agree (see `core.drift.distribution_drift`): PSI at or above the threshold, KS
significant at the Bonferroni level, and the PSI unusual among the reference's own windows of the
same length ("PSI p"). A PSI of 7 with KS p = 1e-24 can still be "none" when the training period
itself produced PSIs that large every few weeks (a rolling volatility wanders through its range):
the "why" column says which test held the verdict back. Pure functions on the stored report's
frames and dicts; `verdict_history` reads stored checks (read-only).
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import Settings, get_settings
from core.drift_report import what_moved
from core.formatting import finite, p_value
from core.store import get_db

PSI_P_EXPLAINED = ("PSI p: the share of the training window's own stretches of the same length whose PSI was at least "
                   "this large. A small PSI p means this month is unusual even for this feature; a large one means "
                   "its training period shifted this much routinely (daily rolling features wander).")
VERDICT_CODES = {"none": 0, "insufficient data": 0, "moderate": 1, "drift": 2}


def _tests(psi: float, ks_p: float, psi_p: float, n_features: int, settings: Settings,
           alpha: float | None = None) -> list[tuple[str, bool | None]]:
    """The three tests of the drift rule at `alpha` (default drift_ks_alpha; a model's check stores the window
    test's share of its budget): (sentence, passed?); None when the test does not apply."""
    alpha = settings.drift_ks_alpha if alpha is None else float(alpha)
    ks_alpha = alpha / max(n_features, 1)
    tests = [(f"PSI {psi:.2f} {'≥' if psi >= settings.drift_psi_threshold else '<'} {settings.drift_psi_threshold:g}",
              bool(psi >= settings.drift_psi_threshold)) if finite(psi) else ("PSI: not enough data", None)]
    tests.append((f"KS p {p_value(ks_p)} {'<' if ks_p < ks_alpha else '≥'} {ks_alpha:.2g}", bool(ks_p < ks_alpha))
                  if finite(ks_p) else ("KS: not applicable", None))
    tests.append((f"PSI p {p_value(psi_p)} {'<' if psi_p < alpha else '≥'} {alpha:g}",
                  bool(psi_p < alpha)) if finite(psi_p) else ("PSI p: not computed", None))
    return tests


def feature_reason(row: pd.Series | dict, n_features: int, settings: Settings | None = None,
                   alpha: float | None = None) -> str:
    """One line: what drove this feature's verdict (shown next to it), e.g.
    "PSI 7.20 ≥ 0.25 ✓ · KS p 1.0e-24 < 0.0025 ✓ · PSI p 0.310 ≥ 0.05 ✗: usual in its training window".

    >>> from core.config import get_settings
    >>> feature_reason({"verdict": "none", "psi": 7.2, "p_value": 1e-24, "psi_p_value": 0.31, "note": "",
    ...                 "out_of_range": 0.0}, 20, get_settings())
    'PSI 7.20 ≥ 0.25 ✓ · KS p 1.0e-24 < 0.0025 ✓ · PSI p 0.310 ≥ 0.05 ✗: usual in its training window'
    """
    settings = settings or get_settings()
    verdict = row["verdict"]
    if row.get("note"):
        return str(row["note"])
    if finite(row.get("out_of_range")) and row["out_of_range"] > 0:
        return f"{row['out_of_range']:.0%} of current values far outside the training range"
    tests = _tests(row["psi"], row["p_value"], row.get("psi_p_value"), n_features, settings, alpha)
    text = " · ".join(f"{sentence} {'✓' if ok else '✗'}" if ok is not None else sentence for sentence, ok in tests)
    if verdict == "none" and tests[0][1] and tests[1][1] is not False and tests[2][1] is False:
        text += ": usual in its training window"
    elif verdict == "none" and tests[0][1] is False:
        text += ": the shift is small"
    return text


def feature_table(features: pd.DataFrame, settings: Settings | None = None, alpha: float | None = None) -> pd.DataFrame:
    """The report's per-feature table for reading: verdict and the reason next to each statistic (tests at
    `alpha`: the report's `dataset["alpha"]`)."""
    settings = settings or get_settings()
    table = features.copy()
    n = len(table)
    table["why"] = [feature_reason(row, n, settings, alpha) for _, row in table.iterrows()]
    order = {"drift": 0, "moderate": 1, "none": 2, "insufficient data": 3}
    table = table.sort_values(["verdict", "psi"], key=lambda c: c.map(order) if c.name == "verdict" else -c)
    columns = ["feature", "verdict", "why", "psi", "psi_p_value", "p_value", "ks_stat", "wasserstein"]
    return table[[c for c in columns if c in table.columns]].reset_index(drop=True)


def performance_card(performance: Mapping) -> dict:
    """The live-error card (st.metric keyword arguments) of a drift report: recent MAE vs validation for a price
    model, recent Brier score of P(up) (and accuracy) vs validation for a direction model."""
    change = performance.get("change_pct")
    if performance.get("kind") == "direction":
        value = f"{performance['recent_brier']:.4f}" if performance.get("recent_brier") is not None else "n/a"
        delta = (f"{change:+.0f}% vs validation {performance['validation_brier']:.4f}; accuracy "
                 f"{performance['recent_accuracy']:.1%}" if change is not None else performance["note"])
        return dict(label="Recent Brier score", value=value, delta=delta, delta_color="inverse" if change is not None else "off")
    return dict(label="Recent MAE", value=f"${performance['recent_mae']:.3f}" if performance["recent_mae"] is not None else "n/a",
                delta=f"{change:+.0f}% (MAPE) vs validation" if change is not None else performance["note"],
                delta_color="inverse" if change is not None else "off")


def prediction_label(prediction: dict, settings: Settings | None = None) -> tuple[str, str]:
    """(value, explanation) for the prediction-PSI metric, labelled by the same three tests as a feature:
    a PSI of 4.8 is "drift" only when the rule says so, and the label says which test held it back."""
    settings = settings or get_settings()
    psi = prediction.get("psi")
    if not finite(psi):
        return "not enough data", prediction.get("note") or "too few predictions in the window"
    if prediction.get("drift"):
        return f"{psi:.2f}", "drift: " + " · ".join(s for s, _ in _tests(psi, prediction.get("p_value"),
                                                                         prediction.get("psi_p_value"), 1, settings))
    tests = _tests(psi, prediction.get("p_value"), prediction.get("psi_p_value"), 1, settings)
    held = [s for s, ok in tests if ok is False]
    return f"{psi:.2f}", "no drift: " + (", ".join(held) if held else "below the thresholds")


def verdict_history(model_id: str, db: sqlite_utils.Database | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(verdict code 0 none / 1 moderate / 2 drift, PSI) per feature (columns) per stored check (rows by as_of).

    The verdict is what the rule decided, so a heatmap of it is not solid red when PSI is large
    every week but usual for the feature."""
    db = db or get_db()
    # SQLite hands over only each report's feature table (a report is ~100 KB of JSON, mostly its error stream);
    # a report it cannot read (a NaN written by Python's json) comes back whole, to be parsed in Python
    rows = db.query(
        "SELECT as_of, CASE WHEN json_valid(report_json) THEN json_extract(report_json, '$.features') "
        "ELSE report_json END AS features, json_valid(report_json) AS valid "
        "FROM drift_checks WHERE model_id = ? ORDER BY as_of, id", [model_id])
    codes, psis = {}, {}
    for r in rows:
        parsed = json.loads(r["features"] or ("[]" if r["valid"] else "{}"))
        features = parsed if r["valid"] else parsed.get("features", [])
        codes[r["as_of"]] = {f["feature"]: VERDICT_CODES.get(f.get("verdict"), np.nan) for f in features}
        psis[r["as_of"]] = {f["feature"]: f.get("psi") for f in features}
    as_frame = lambda data: pd.DataFrame.from_dict(data, orient="index").astype(float).sort_index()  # noqa: E731
    return as_frame(codes), as_frame(psis)


def episode_table(episodes: list[Mapping]) -> pd.DataFrame:
    """Every alarm episode of the sequential detectors (`core.drift_watch.episodes`), newest first, one row each:
    what moved (naming the feature), when it started, when it alarmed first and last, and the evidence."""
    rows = [{"what changed": what_moved(e), "detector": e["detector"], "onset (estimated)": e["onset_day"],
             "first alarm": e["first_alarm_day"], "latest alarm": e["alarm_day"], "alarm days": e["n_alarms"],
             "trading days onset → alarm": int(e["delay_days"]) - 1,  # 0: the same day
             "evidence": f"statistic {e['statistic']:.2f} vs threshold {e['threshold']:.2f} "
                         f"({e['statistic'] / e['threshold']:.2f}× the threshold)"} for e in episodes]
    columns = ["what changed", "detector", "onset (estimated)", "first alarm", "latest alarm", "alarm days",
               "trading days onset → alarm", "evidence"]
    return pd.DataFrame(rows, columns=columns).iloc[::-1].reset_index(drop=True)
