"""Drift statistics on frames: `compare_frames` and its dataset-level verdict (pure, no database).

Two windows are compared: `reference` (the features a model was trained on) and `current` (the last
`window_days` trading days). One vectorised pass (`core.drift_kernels`) computes PSI, the KS statistic
and the Wasserstein distance for every column. The dataset-level verdict controls false alarms across
~20 features with two guards at once: a feature counts as drifted only when PSI says the shift is
large (>= `drift_psi_threshold`) AND KS says it is significant at a Bonferroni-corrected alpha
(`alpha / n_features`); the dataset drifts only when the share of drifted features reaches
`drift_share_threshold`. A model's drift check runs the rule at the window test's share of the check's
false-alarm budget (`check_budget`: drift_ks_alpha minus what the sequential alarms spend).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.config import Settings, get_settings
from core.drift_kernels import PSI_EPSILON, check_frames, column_stats, column_matrix

MISSING_RATE_JUMP = 0.10  # a rise of 10 points in the share of missing values is a data-quality drift
HOLD_DAYS = 5  # trading days a sequential alarm stays current in a check's verdict (core/drift_watch.py)
MIN_WINDOW_SHARE = 0.2  # the window test keeps at least this share of the check's budget, whatever the ARL
ARL_TOLERANCE = 1.5  # a model's detectors may alarm up to 1.5x as often as their budget (issue 13's tolerance)


@dataclass(frozen=True)
class CheckBudget:
    """One false-alarm budget per drift check, split between its two parts.

    A check on a calm month says "drift" when its window test fires OR a sequential alarm of its last
    `HOLD_DAYS` trading days is current, so P(false alarm) <= P(window) + P(sequential) (Bonferroni). The
    detectors' share follows from their own budget: at one false alarm per `arl_days` model-days, an alarm
    falls in a given `HOLD_DAYS`-day stretch with probability <= HOLD_DAYS / arl_days (2% at 5 / 250). That
    rate is calibrated on a finite reference (1000 days): a model's detectors may alarm up to `ARL_TOLERANCE`
    (1.5x) as often, so the sequential part is charged 1.5 x 2% = 3%, and the window test gets what is left of
    `total` (drift_ks_alpha, 5%: 2% at the defaults), never less than `MIN_WINDOW_SHARE` of it (an ARL under
    1.5 x HOLD_DAYS / (0.8 total) = 188 days then spends more than `total`). Measured on calm months by
    bench/drift_quality.py (README, "Sequential drift detection").
    """

    total: float
    sequential: float
    window: float

    def describe(self) -> str:
        return (f"false-alarm budget of a check {self.total:.0%}: window test {self.window:.1%} + a sequential alarm "
                f"current (its last {HOLD_DAYS} days) {self.sequential:.1%}")


def check_budget(settings: Settings | None = None) -> CheckBudget:
    """The split of drift_ks_alpha between the window test and the sequential alarms (`CheckBudget`)."""
    settings = settings or get_settings()
    total = settings.drift_ks_alpha
    sequential = ARL_TOLERANCE * HOLD_DAYS / settings.drift_arl_days
    window = round(max(total - sequential, MIN_WINDOW_SHARE * total), 12)  # 0.02, not 0.020000000000000004
    return CheckBudget(total=total, sequential=sequential, window=window)


# --- frames ------------------------------------------------------------------------------------------

@dataclass
class FrameComparison:
    """Per-feature statistics and the dataset-level verdict of `compare_frames`."""

    features: pd.DataFrame
    n_features: int
    n_drifted: int
    drifted_share: float
    dataset_drift: bool
    alpha_corrected: float
    rule: str


def _categorical_row(ref: pd.Series, cur: pd.Series) -> dict[str, Any]:
    """PSI over category frequencies (an unseen category is its own bin) and the new categories."""
    ref_counts = ref.dropna().astype(str).value_counts(normalize=True)
    cur_counts = cur.dropna().astype(str).value_counts(normalize=True)
    categories = ref_counts.index.union(cur_counts.index)
    e = np.maximum(ref_counts.reindex(categories, fill_value=0).to_numpy(), PSI_EPSILON)
    a = np.maximum(cur_counts.reindex(categories, fill_value=0).to_numpy(), PSI_EPSILON)
    return {"psi": float(((a - e) * np.log(a / e)).sum()), "ks_stat": np.nan, "p_value": np.nan, "wasserstein": np.nan,
            "psi_p_value": np.nan, "out_of_range": np.nan,
            "new_categories": sorted(set(cur_counts.index) - set(ref_counts.index))}


def compare_frames(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    bins: int = 10,
    settings: Settings | None = None,
    serial: bool = False,
    alpha: float | None = None,
) -> FrameComparison:
    """Compare every column of `current` with `reference`; pure (no storage, no clock).

    Per feature: psi, ks_stat, p_value, wasserstein (/ reference std), missing rates, new categories
    and a verdict: "drift" when PSI >= drift_psi_threshold and the KS p-value < drift_ks_alpha / k
    (Bonferroni over the k features), or the missing rate rose by >= 10 points, or a new category
    appeared, or a current value lies beyond the reference's [min, max] widened by its range on each
    side (`out_of_range`, the share of such values: scale / units changes); "moderate" when PSI >= drift_psi_moderate and p < drift_ks_alpha; else "none".
    Dataset drift: at least drift_share_threshold of the features drift (see the module docstring).
    With `serial` (rows are consecutive days), a feature must also have a PSI p-value (among the
    reference's own windows of the current length, see `psi_null`) under drift_ks_alpha.
    `alpha` replaces drift_ks_alpha in the "drift" rule: a model's drift check passes the window test's share
    of the check's budget (`check_budget`), since its sequential alarms spend the rest.
    """
    settings = settings or get_settings()
    alpha = settings.drift_ks_alpha if alpha is None else float(alpha)
    numeric, other = check_frames(reference, current)
    k = len(numeric) + len(other)
    alpha_corrected = alpha / k
    ref_matrix, cur_matrix = column_matrix(reference, numeric), column_matrix(current, numeric)
    table = column_stats(ref_matrix, cur_matrix, bins, serial=serial) if numeric else pd.DataFrame()
    if not serial and numeric:
        table["psi_p_value"] = np.nan
    stat_columns = ["psi", "ks_stat", "p_value", "wasserstein", "psi_p_value", "out_of_range"]
    numeric_rows = table[stat_columns].assign(feature=numeric) if numeric else pd.DataFrame(columns=["feature", *stat_columns])
    numeric_rows["new_categories"] = [[] for _ in numeric]
    other_rows = pd.DataFrame([{"feature": name, **_categorical_row(reference[name], current[name])} for name in other],
                              columns=["feature", *stat_columns, "new_categories"])
    features = pd.concat([df for df in (numeric_rows, other_rows) if not df.empty] or [other_rows], ignore_index=True)
    features = features[["feature", *stat_columns, "new_categories"]]
    features["missing_ref"] = np.concatenate([1 - table["n_ref"].to_numpy() / len(reference) if numeric else [],
                                              reference[other].isna().mean().to_numpy()])
    features["missing_cur"] = np.concatenate([1 - table["n_cur"].to_numpy() / len(current) if numeric else [],
                                              current[other].isna().mean().to_numpy()])
    features["note"] = _constant_notes(table) + [""] * len(other) if numeric else [""] * len(other)
    features["verdict"] = _verdicts(features, settings, alpha)
    n_drifted = int((features["verdict"] == "drift").sum())
    share = n_drifted / k
    rule = (f"feature drifts: PSI >= {settings.drift_psi_threshold:g} and KS p < {alpha_corrected:.2g} "
            f"({alpha:g} / {k})"
            + (f" and PSI unusual vs the reference's own windows (p < {alpha:g})" if serial else "")
            + f"; dataset drifts: >= {settings.drift_share_threshold:.0%} of features")
    return FrameComparison(features=features, n_features=k, n_drifted=n_drifted, drifted_share=share,
                           dataset_drift=share >= settings.drift_share_threshold, alpha_corrected=alpha_corrected, rule=rule)


def _constant_notes(table: pd.DataFrame) -> list[str]:
    """Per numeric column: what a constant reference means (an index's volume of 0 is constant in both
    windows: no drift; a constant that changes is drift, said plainly rather than as "out of range")."""
    notes = []
    for constant, value, share in table[["ref_constant", "ref_min", "out_of_range"]].itertuples(index=False):
        if not constant or not np.isfinite(share):
            notes.append("")
        elif share == 0:
            notes.append(f"constant in both windows ({value:g}): no drift")
        else:
            notes.append(f"constant at {value:g} in the reference; {share:.0%} of current values differ")
    return notes


def distribution_drift(psi_values: np.ndarray, p_values: np.ndarray, psi_p_values: np.ndarray, n_features: int,
                       psi_threshold: float, ks_alpha: float) -> np.ndarray:
    """The per-feature rule on arrays (any shape): PSI large AND KS significant at the Bonferroni
    level alpha / n_features AND (for daily series) the PSI unusual for this feature at alpha.

    Each view alone fails: PSI is noisy on a 30-day window (10 bins, 3 expected values each), KS flags
    tiny shifts in large samples, and both treat autocorrelated days as independent, so on daily
    features they fire in most calm months (bench/drift_quality.py: 39-90% false alarms). The PSI
    null is taken at alpha, not alpha / k: its windows overlap, and the bench shows alpha / k leaves
    the rule blind (0% false alarms, ~0% detections). NaN p-values (categorical columns; no serial
    null) pass their side.
    """
    p_values = np.where(np.isnan(p_values), 0.0, p_values)
    psi_p_values = np.where(np.isnan(psi_p_values), 0.0, psi_p_values)
    with np.errstate(invalid="ignore"):
        return (psi_values >= psi_threshold) & (p_values < ks_alpha / n_features) & (psi_p_values < ks_alpha)


def _verdicts(features: pd.DataFrame, settings: Settings, alpha: float) -> np.ndarray:
    psi_values, p = features["psi"].to_numpy(dtype=float), features["p_value"].to_numpy(dtype=float)
    psi_p = features["psi_p_value"].to_numpy(dtype=float)
    categorical = features["ks_stat"].isna().to_numpy() & np.isfinite(psi_values)
    missing_jump = (features["missing_cur"] - features["missing_ref"]).to_numpy() >= MISSING_RATE_JUMP
    new_categories = features["new_categories"].map(bool).to_numpy()
    far_outside = features["out_of_range"].to_numpy(dtype=float) > 0
    drift = (distribution_drift(psi_values, np.where(categorical, np.nan, p), psi_p, len(features),
                                settings.drift_psi_threshold, alpha)
             | missing_jump | new_categories | far_outside)
    moderate = ((psi_values >= settings.drift_psi_moderate) & np.where(categorical, True, p < settings.drift_ks_alpha)
                & ~(psi_p >= settings.drift_ks_alpha))
    verdict = np.where(drift, "drift", np.where(moderate, "moderate", "none"))
    return np.where(~np.isfinite(psi_values) & ~drift, "insufficient data", verdict)


# --- the model-level report ----------------------------------------------------------------------------
