"""Where a model fails: live error and skill by market regime and by decile of its top features (no database).

The input is the model's scored served predictions (predicted, last and actual close in $) joined with
the feature row of the day each forecast was made. Every cut point comes from the model's reference
(training) window, never from the days being judged, so a regime or a decile means the same thing on
every day and a shifted market shows up as days piling into one end (as PSI's bins do).

- Volatility regime: the 20-day realised volatility (`volatility_20`, std of daily log returns, known
  on the forecast day) against the terciles of the reference window: calm / normal / turbulent.
- Market direction: the ticker's move on the predicted day (actual close vs the close before it).
- Feature deciles: the deciles of a feature over the reference window, applied to the scored days.

Skill is 1 - MAE_model / MAE_naive on the same days, naive being "tomorrow's close = today's".

A group is only called the weakest when it credibly is: the lowest-skill group of a split (with at least
`MIN_DAYS_TO_RANK` days) gets a bootstrap interval of its skill minus the skill of the split's other days
(scipy.stats.bootstrap, Bonferroni over the split's ranked groups, since it was picked as the lowest), and
`stands_out` only when that interval lies below 0. Otherwise the page says no group stands out.
Ranges are written in the units users think in: returns, volatility, distance to a moving average and
MACD (a fraction of the price) in %, RSI in points, volume in standard deviations, weekdays by name.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

VOLATILITY_FEATURE = "volatility_20"
VOLATILITY_REGIMES = ("calm", "normal", "turbulent")
DIRECTIONS = ("up day", "down day", "flat day")
MIN_DAYS_TO_RANK = 5  # a group with fewer scored days is shown but never named the weakest
ERROR_COLUMNS = ["days", "share", "mae", "naive_mae", "skill", "gap_low", "gap_high", "stands_out"]
STANDOUT_CONFIDENCE = 0.95  # before the Bonferroni split over a split's ranked groups
BOOTSTRAP_RESAMPLES = 1999
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri")  # trading days: day_of_week 0..4
PERCENT_FEATURES = ("ret_", "volatility_", "close_to_sma_", "macd")  # fractions (of a price or log returns) -> %


class HealthError(ValueError):
    """Inputs that cannot be split (no reference rows, a missing column)."""


def _require(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise HealthError(f"{what} lacks {', '.join(missing)}.")


def grouped_errors(scored: pd.DataFrame, codes: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """Days, share of days, MAE $, naive MAE $ and skill per group; `codes[i]` is row i's index into `labels`.

    Every label gets a row, an empty group with 0 days and NaN errors (not 0: "no days" is not "no error").
    Sums by `np.bincount`, one pass whatever the number of groups (the page recomputes on each rerun).
    """
    _require(scored, ["predicted_close", "last_close", "actual_close"], "the scored predictions")
    actual = scored["actual_close"].to_numpy(dtype=float)
    abs_error = np.abs(scored["predicted_close"].to_numpy(dtype=float) - actual)
    naive_abs_error = np.abs(scored["last_close"].to_numpy(dtype=float) - actual)
    codes = np.asarray(codes, dtype=int)
    days = np.bincount(codes, minlength=len(labels))
    with np.errstate(divide="ignore", invalid="ignore"):
        mae = np.bincount(codes, weights=abs_error, minlength=len(labels)) / days
        naive = np.bincount(codes, weights=naive_abs_error, minlength=len(labels)) / days
        skill = np.where(naive > 0, 1 - mae / naive, np.nan)
        share = days / len(codes) if len(codes) else np.full(len(labels), np.nan)
    gap_low, gap_high = np.full(len(labels), np.nan), np.full(len(labels), np.nan)
    ranked = np.flatnonzero((days >= MIN_DAYS_TO_RANK) & np.isfinite(skill))
    if len(ranked) >= 2:  # one group alone has no "rest" to differ from
        lowest = ranked[np.argmin(skill[ranked])]
        gap_low[lowest], gap_high[lowest] = skill_gap_interval(
            abs_error, naive_abs_error, codes == lowest, 1 - (1 - STANDOUT_CONFIDENCE) / len(ranked))
    return pd.DataFrame({"group": labels, "days": days, "share": share, "mae": mae, "naive_mae": naive, "skill": skill,
                         "gap_low": gap_low, "gap_high": gap_high, "stands_out": gap_high < 0},
                        columns=["group", *ERROR_COLUMNS])


def skill_gap_interval(abs_error: np.ndarray, naive_abs_error: np.ndarray, in_group: np.ndarray,
                       confidence: float, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of skill(group days) - skill(the other days): each side's days resampled
    on their own (scipy.stats.bootstrap over day indices, vectorised); seeded, so a page shows the same words
    on every rerun. (nan, nan) when the rest has fewer than `MIN_DAYS_TO_RANK` days."""
    from scipy import stats  # lazy: only the Monitoring page's health tab needs it

    group, rest = np.flatnonzero(in_group), np.flatnonzero(~np.asarray(in_group, dtype=bool))
    if len(group) < MIN_DAYS_TO_RANK or len(rest) < MIN_DAYS_TO_RANK:
        return float("nan"), float("nan")

    def gap(g: np.ndarray, r: np.ndarray, axis: int = -1) -> np.ndarray:
        g, r = g.astype(int), r.astype(int)
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((1 - abs_error[g].mean(axis) / naive_abs_error[g].mean(axis))
                    - (1 - abs_error[r].mean(axis) / naive_abs_error[r].mean(axis)))

    result = stats.bootstrap((group, rest), gap, vectorized=True, paired=False, confidence_level=confidence,
                             n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def tercile_edges(reference: np.ndarray | pd.Series) -> np.ndarray:
    """The 1/3 and 2/3 quantiles of the reference values (NaNs ignored)."""
    values = np.asarray(reference, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise HealthError("the reference window has no finite value to cut into terciles.")
    return np.quantile(values, [1 / 3, 2 / 3])


def decile_edges(reference: np.ndarray | pd.Series) -> np.ndarray:
    """The nine interior deciles of the reference values (NaNs ignored)."""
    values = np.asarray(reference, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise HealthError("the reference window has no finite value to cut into deciles.")
    return np.quantile(values, np.arange(1, 10) / 10)


def bin_index(values: np.ndarray | pd.Series, edges: np.ndarray) -> np.ndarray:
    """0-based bin of each value: bin i holds edges[i-1] < value <= edges[i] (as pandas.cut, right-closed)."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="left")


def _ranges(edges: np.ndarray, fmt: str, suffix: str = "") -> list[str]:
    bounds = [-np.inf, *edges, np.inf]
    return [(("≤ " + format(hi, fmt)) if lo == -np.inf else ("> " + format(lo, fmt)) if hi == np.inf
             else f"{format(lo, fmt)} to {format(hi, fmt)}") + suffix for lo, hi in zip(bounds[:-1], bounds[1:])]


def _weekday_ranges(edges: np.ndarray) -> list[str]:
    """Right-closed bins of weekday numbers (0 = Monday) named by the days they hold ("none" for an empty tie)."""
    bounds = [-1, *np.floor(np.asarray(edges, dtype=float)).astype(int), len(WEEKDAYS) - 1]
    names = [WEEKDAYS[lo + 1:hi + 1] for lo, hi in zip(bounds[:-1], bounds[1:])]
    return ["none" if not days else days[0] if len(days) == 1 else f"{days[0]}–{days[-1]}" for days in names]


def feature_ranges(feature: str, edges: np.ndarray) -> list[str]:
    """The bins cut at `edges` in the units users think in (see the module docstring), not raw fractions."""
    if feature == "day_of_week":
        return _weekday_ranges(edges)
    if feature.startswith(PERCENT_FEATURES):
        return _ranges(np.asarray(edges, dtype=float) * 100, ".2f", " %")
    if feature == "rsi_14":
        return _ranges(edges, ".0f")
    if feature.startswith("volume_z"):
        return _ranges(edges, "+.2f", " σ")
    return _ranges(edges, ".4g")


def regime_errors(scored: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Error and skill by volatility regime (reference terciles of `volatility_20`) and by the day's direction.

    Columns: kind ("volatility" / "direction"), group, range (the regime's bounds, daily volatility in %),
    days, share, mae, naive_mae, skill.
    """
    _require(scored, [VOLATILITY_FEATURE], "the scored predictions")
    _require(reference, [VOLATILITY_FEATURE], "the reference window")
    edges = tercile_edges(reference[VOLATILITY_FEATURE])
    bins = bin_index(scored[VOLATILITY_FEATURE], edges)
    volatility = grouped_errors(scored, bins, list(VOLATILITY_REGIMES))
    volatility.insert(0, "kind", "volatility")
    volatility.insert(2, "range", [f"{r} % a day" for r in _ranges(edges * 100, ".2f")])
    move = np.sign(scored["actual_close"].astype(float).to_numpy() - scored["last_close"].astype(float).to_numpy())
    direction = grouped_errors(scored, np.where(move > 0, 0, np.where(move < 0, 1, 2)), list(DIRECTIONS))
    direction = direction[(direction["group"] != DIRECTIONS[2]) | (direction["days"] > 0)]  # flat days only when there are some
    direction.insert(0, "kind", "direction")
    direction.insert(2, "range", ["close rose", "close fell", "close unchanged"][: len(direction)])
    return pd.concat([volatility, direction], ignore_index=True)


def feature_decile_errors(scored: pd.DataFrame, reference: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Error and skill by reference decile (1..10) of each feature in `features`.

    Columns: feature, decile, range (the decile's bounds in the feature's units), days, share, mae,
    naive_mae, skill. A feature with tied reference values (day_of_week) has fewer distinct edges:
    its empty deciles keep 0 days.
    """
    _require(scored, features, "the scored predictions")
    _require(reference, features, "the reference window")
    tables = []
    for feature in features:
        edges = decile_edges(reference[feature])
        table = grouped_errors(scored, bin_index(scored[feature], edges), [str(i) for i in range(1, 11)])
        table.insert(0, "feature", feature)
        table.insert(2, "range", feature_ranges(feature, edges))
        tables.append(table.rename(columns={"group": "decile"}))
    columns = ["feature", "decile", "range", *ERROR_COLUMNS]
    return pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)


def weakest(table: pd.DataFrame, min_days: int = MIN_DAYS_TO_RANK) -> pd.Series | None:
    """The row with the lowest skill among groups with at least `min_days` days whose skill is credibly below
    the rest of their split (`stands_out`), or None: then no group stands out."""
    ranked = table[(table["days"] >= min_days) & table["skill"].notna() & table["stands_out"].astype(bool)]
    return None if ranked.empty else ranked.loc[ranked["skill"].idxmin()]
