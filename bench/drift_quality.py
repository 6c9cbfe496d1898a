"""Quality of the drift detector on the bundled real price series: false alarms and detection delay.

For windows spread over every bundled ticker: reference = the `train_window_days` trading days of
features before the window (what a model trained there would see); current = the next
`drift_window_days` days. (a) Calm windows, no change injected, count false alarms. A window is
"calm" by a criterion independent of the detector: its 30-day realised volatility and 30-day return
both lie inside the 10th-90th percentile of the reference's own rolling 30-day values. (b) From the
day after a calm window, inject a change and re-run the check each trading day on the last
`drift_window_days` days: detection rate within the horizon and delay in trading days.

Prints a grid of (PSI threshold, share of drifted features) so the defaults are chosen on data.

Then the sequential detectors (core/sequential.py) on the same windows: a profile fitted on each
window's reference (thresholds for `--arl`), the detectors running from `WARM` days before the window.
(a) False alarms on the calm windows per model-day, against 1/ARL. (b) From the day after each calm
window: volatility x2, macd x10, an error jump of 2 validation MAEs (the model is a ridge regression on
the features, see `ridge_errors`) and a +0.5 sd mean shift: delay of the detector that watches what
changed, next to the oracle CUSUM (told the true change) at the same ARL, and the onset estimate's
error. (c) One day's vectorised update for 1,000 models.

    .venv/bin/python bench/drift_quality.py [--step 60] [--horizon 15] [--window 30]
    .venv/bin/python bench/drift_quality.py --only sequential --seq-step 40   # more calm windows (~4 min)
    .venv/bin/python bench/drift_quality.py --step 40 --cache /tmp/w40.pkl --seq-cache /tmp/s40.pkl \
        --daily-cache /tmp/d40.pkl  # the README's run
    .venv/bin/python bench/drift_quality.py --step 20 --cache /tmp/w20.pkl --seq-cache /tmp/s20.pkl \
        --daily-cache /tmp/d20.pkl  # twice the calm windows, overlapping (13 min from scratch)

`--bank-sweep` adds the volatility detector alone with each drift bank of `VARIANCE_BANKS` (how its bank was chosen).

The last lines measure one drift check's false alarms against its budget (`core.drift_stats.check_budget`): the
window test at its share, a sequential alarm current (its last HOLD_DAYS days), and the combined verdict (either), on
each calm window's last day and on every day of the calm windows on which check_model runs (window test =
`compare_frames` on the days after the training window), with a cluster bootstrap CI by calm window
(checks on nearby days of one window are correlated). `--daily-cache` keeps those window tests (5,642 at --step 40, ~80 s; the whole run from scratch ~6 min).
Then the same two figures with a moving-block bootstrap over window starts per ticker (`block_bootstrap`), usable at
any --step, also where calm windows overlap (a last-day check depends on WARM + window days of returns); the references
overlap at any step, so blocks up to a reference's length are printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scipy import stats  # noqa: E402

from core.calibration import Standardiser, Stream, calibrate, calm_days  # noqa: E402
from core.config import get_settings  # noqa: E402
from core.drift_kernels import column_stats  # noqa: E402
from core.drift_kernels import MIN_SAMPLES  # noqa: E402
from core.drift_stats import HOLD_DAYS, check_budget, compare_frames, distribution_drift  # noqa: E402
from core.drift_report import volatility_check  # noqa: E402
from core.features import FEATURE_COLUMNS, WARMUP_DAYS, build_features  # noqa: E402
from core.market import bundled_frame  # noqa: E402
from core.sequential import (DETECTORS, CusumArray, fit_profile, innovations, innovations_many, new_detectors,  # noqa: E402
                             stack_standardisers)
from core.watch_step import pack, unpack  # noqa: E402

SCALED_FEATURE = "macd"  # the feature whose scale changes (x10: e.g. MACD suddenly in price units)


def _with_returns(prices: pd.DataFrame, onset: int, transform: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> pd.DataFrame:
    """Prices whose log returns from row `onset` on are `transform(returns, days_since_onset)`."""
    close = prices["close"].to_numpy()
    returns = np.diff(np.log(close))
    days = np.arange(len(returns)) - (onset - 1)  # returns[i] is the move into row i + 1
    after = days >= 0
    changed = returns.copy()
    changed[after] = transform(returns[after], days[after])
    new_close = close[0] * np.exp(np.concatenate([[0.0], np.cumsum(changed)]))
    ratio = new_close / close
    out = prices.copy()
    for column in ("open", "high", "low", "close"):
        out[column] = prices[column] * ratio
    return out


def scenarios(reference_sd: float, reference_mean: float) -> dict[str, Callable]:
    def mean_shift(r, d):
        return r + 0.5 * reference_sd

    def vol_double(r, d):
        return reference_mean + 2.0 * (r - reference_mean)

    def gradual(r, d):
        return reference_mean + (1.0 + np.minimum(1.0, (d + 1) / 10.0)) * (r - reference_mean)

    return {"mean shift +0.5 sd/day": mean_shift, "volatility x2": vol_double, "gradual vol x1->x2 over 10 d": gradual}


def is_calm(log_ret: np.ndarray, start: int, window: int, reference_days: int) -> bool:
    """The window [start, start + window) is calm: its realised volatility and its return both lie inside
    the 10th-90th percentile of the reference's own rolling `window`-day values."""
    ref_ret = log_ret[start - reference_days:start]
    roll_vol = pd.Series(ref_ret).rolling(window).std().dropna()
    roll_ret = pd.Series(ref_ret).rolling(window).sum().dropna()
    cur_vol, cur_ret = np.std(log_ret[start:start + window], ddof=1), np.sum(log_ret[start:start + window])
    return bool(roll_vol.quantile(0.1) <= cur_vol <= roll_vol.quantile(0.9)
                and roll_ret.quantile(0.1) <= cur_ret <= roll_ret.quantile(0.9))


def window_stats(features: pd.DataFrame, ref_rows: slice, cur_rows: slice) -> tuple[np.ndarray, ...]:
    ref = np.ascontiguousarray(features.iloc[ref_rows][FEATURE_COLUMNS].to_numpy().T)
    cur = np.ascontiguousarray(features.iloc[cur_rows][FEATURE_COLUMNS].to_numpy().T)
    table = column_stats(ref, cur, serial=True)  # as check_model: with the PSI null of the reference's own windows
    return (table["psi"].to_numpy(), table["p_value"].to_numpy(), table["psi_p_value"].to_numpy(),
            table["out_of_range"].to_numpy())


def run(step: int, horizon: int, window: int, reference_days: int) -> dict:
    settings = get_settings()
    records = []  # one per (window, scenario, day): psi and p arrays, vol flag
    bundle = bundled_frame()
    for symbol in sorted(bundle["symbol"].unique()):
        prices = bundle[bundle["symbol"] == symbol].set_index("date").sort_index()
        prices = prices[["open", "high", "low", "close", "adj_close", "volume"]]
        close = prices["close"].to_numpy()
        log_ret = np.diff(np.log(close), prepend=np.nan)
        first = WARMUP_DAYS + reference_days + 1
        for start in range(first, len(prices) - window - horizon, step):
            ref_rows, cur_rows = slice(start - reference_days, start), slice(start, start + window)
            ref_ret = log_ret[ref_rows]
            calm = is_calm(log_ret, start, window, reference_days)
            lo = start - reference_days - WARMUP_DAYS - 1
            segment = prices.iloc[lo:start + window + horizon]
            offset = start - lo
            base = build_features(segment, symbol, dropna=False)
            ref_slice, end = slice(offset - reference_days, offset), offset + window
            psi_v, p_v, q_v, o_v = window_stats(base, ref_slice, slice(offset, end))
            vol = volatility_check(ref_ret, log_ret[cur_rows], settings.drift_ks_alpha)["volatility_drift"]
            episode = len(records)
            records.append({"symbol": symbol, "date": prices.index[end - 1 + lo], "calm": calm, "scenario": "none",
                            "day": 0, "psi": psi_v, "p": p_v, "q": q_v, "oor": o_v, "vol": vol, "episode": episode})
            if not calm:
                continue
            onset = end  # the first changed day is the day after the calm window
            sd, mean = float(np.nanstd(ref_ret)), float(np.nanmean(ref_ret))
            variants = {name: build_features(_with_returns(segment, onset, fn), symbol, dropna=False)
                        for name, fn in scenarios(sd, mean).items()}
            scaled = base.copy()
            scaled.iloc[onset:, scaled.columns.get_loc(SCALED_FEATURE)] *= 10
            variants[f"{SCALED_FEATURE} scale x10"] = scaled
            for name, features in variants.items():
                seg_ret = np.diff(np.log(features["close"].to_numpy()), prepend=np.nan)
                for day in range(1, horizon + 1):
                    cur_slice = slice(onset + day - window, onset + day)
                    psi_v, p_v, q_v, o_v = window_stats(features, ref_slice, cur_slice)
                    vol = volatility_check(ref_ret, seg_ret[cur_slice], settings.drift_ks_alpha)["volatility_drift"]
                    records.append({"symbol": symbol, "date": None, "calm": True, "scenario": name, "day": day,
                                    "psi": psi_v, "p": p_v, "q": q_v, "oor": o_v, "vol": vol, "episode": episode})
    return {"records": records}


def evaluate(records: list[dict], psi_threshold: float, share: float, alpha: float) -> dict:
    frame = pd.DataFrame(records)
    psi = np.vstack(frame["psi"].to_numpy())
    p = np.vstack(frame["p"].to_numpy())
    q = np.vstack(frame["q"].to_numpy())
    far_outside = np.vstack(frame["oor"].to_numpy()) > 0
    drifted = distribution_drift(psi, p, q, psi.shape[1], psi_threshold, alpha) | far_outside  # as compare_frames
    frame["dataset"] = drifted.mean(axis=1) >= share
    frame["scaled_feature"] = drifted[:, FEATURE_COLUMNS.index(SCALED_FEATURE)]
    return frame


def summarise(frame: pd.DataFrame, horizon: int) -> list[dict]:
    """False-alarm rates, then per scenario: detection rate and delay, counted only on episodes whose
    calm window did not already alarm (an alarm before the change is a false alarm, not a detection)."""
    rows = []
    null = frame[frame["scenario"] == "none"]
    calm = null[null["calm"]]
    rows.append({"scenario": "calm windows: false alarms", "n": len(calm), "alarm %": 100 * calm["dataset"].mean(),
                 "vol-check alarm %": 100 * calm["vol"].mean()})
    rows.append({"scenario": "all windows (real changes incl.)", "n": len(null), "alarm %": 100 * null["dataset"].mean(),
                 "vol-check alarm %": 100 * null["vol"].mean()})
    clean = set(calm.loc[~calm["dataset"], "episode"])
    injected = frame[(frame["scenario"] != "none") & frame["episode"].isin(clean)]
    for name, rows_s in injected.groupby("scenario", sort=False):
        feature_level = "scale" in name
        hit = rows_s["scaled_feature"] if feature_level else rows_s["dataset"]
        first = rows_s.assign(hit=hit).groupby("episode")[["hit", "day"]].apply(
            lambda g: g.loc[g["hit"], "day"].min() if g["hit"].any() else np.nan)
        vol_first = rows_s.groupby("episode")[["vol", "day"]].apply(
            lambda g: g.loc[g["vol"], "day"].min() if g["vol"].any() else np.nan)
        rows.append({"scenario": name + (" [feature verdict]" if feature_level else " [dataset verdict]"),
                     "n": int(len(first)), f"detected <= {horizon} d %": 100 * first.notna().mean(),
                     "within 1 d %": 100 * (first <= 1).mean(), "within 5 d %": 100 * (first <= 5).mean(),
                     "median delay d": float(first.median()) if first.notna().any() else np.nan,
                     "vol-check within 5 d %": np.nan if feature_level else 100 * (vol_first <= 5).mean()})
    return rows


# ------------------------------------------------------------------------------------------------------
# Sequential detectors (core/sequential.py): false alarms per model-day, delay next to the oracle CUSUM.

WARM = 60  # detectors start this many trading days before the window (the reference's last days): a warm state
SEQ_SCENARIOS = ("volatility x2", f"{SCALED_FEATURE} scale x10", "error jump +2 MAE", "mean shift +0.5 sd/day")
RETURN_DETECTORS = ("returns_mean", "returns_variance")


def ridge_errors(features: pd.DataFrame, ref: slice, beta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The simulated model: a ridge regression of the next-day return on the 20 features, fitted on the reference
    rows (standardised features, penalty = n). Its errors on daily returns are as large as naive's, like the
    app's models. Returns (|target - prediction| per row, coefficients); the caller divides by the reference
    MAE (in-sample here, where the app uses the validation MAE)."""
    x = features[FEATURE_COLUMNS].to_numpy(dtype=float)
    if beta is None:
        xr, yr = x[ref], features["target"].to_numpy(dtype=float)[ref]
        mu, sd = np.nanmean(xr, axis=0), np.nanstd(xr, axis=0) + 1e-12
        z = (xr - mu) / sd
        coef = np.linalg.solve(z.T @ z + len(z) * np.eye(z.shape[1]), z.T @ (yr - yr.mean()))
        beta = np.concatenate([[yr.mean()], coef, mu, sd])
    k = len(FEATURE_COLUMNS)
    prediction = beta[0] + ((x - beta[1 + k:1 + 2 * k]) / beta[1 + 2 * k:]) @ beta[1:1 + k]
    return np.abs(features["target"].to_numpy(dtype=float) - prediction), beta


def oracle_increments(name: str, reference: dict, values: np.ndarray) -> np.ndarray:
    """Log-likelihood ratio of the TRUE change under a Gaussian model fitted on the reference: Page's CUSUM on
    these increments is the optimal detector for a known change (Lorden 1971; Moustakides 1986)."""
    mean, sd = reference[name]
    z = (values - mean) / sd
    if name == "volatility x2":  # N(m, s^2) -> N(m, 4 s^2)
        return 0.375 * z * z - np.log(2.0)
    if name == "mean shift +0.5 sd/day":  # N(m, s^2) -> N(m + 0.5 s, s^2)
        return 0.5 * (z - 0.25)
    if name == "error jump +2 MAE":  # relative error: mean + 2 (validation MAE = 1)
        return (2.0 / sd) * (z - 1.0 / sd)
    return -np.log(10.0) - (values - 10 * mean) ** 2 / (200 * sd * sd) + z * z / 2  # N(m, s^2) -> N(10 m, 100 s^2)


def _episode_arrays(frame: pd.DataFrame, rows: slice, beta: np.ndarray, mae: float) -> dict[str, np.ndarray]:
    close = frame["close"].to_numpy(dtype=float)
    values = frame[FEATURE_COLUMNS].to_numpy(dtype=float)
    errors, _ = ridge_errors(frame, rows, beta)
    return {"ret": np.diff(np.log(close), prepend=np.nan)[rows], "err": errors[rows] / mae,
            "feat": values[rows], "prev": values[rows.start - 1:rows.stop - 1]}


def window_grid(step: int, horizon: int, window: int,
                reference_days: int) -> Iterator[tuple[str, pd.DataFrame, np.ndarray, int, bool]]:
    """Every window of the bench, in order (symbol, then start): (symbol, prices, log returns, start, calm). The
    start grid and the calm criterion all sections share, so their calm windows line up one to one."""
    bundle = bundled_frame()
    for symbol in sorted(bundle["symbol"].unique()):
        prices = bundle[bundle["symbol"] == symbol].set_index("date").sort_index()
        prices = prices[["open", "high", "low", "close", "adj_close", "volume"]]
        log_ret = np.diff(np.log(prices["close"].to_numpy()), prepend=np.nan)
        for start in range(WARMUP_DAYS + reference_days + 1, len(prices) - window - horizon, step):
            yield symbol, prices, log_ret, start, is_calm(log_ret, start, window, reference_days)


def sequential_episodes(step: int, horizon: int, window: int, reference_days: int, seq_horizon: int,
                        arl: float) -> list[dict]:
    """The same windows as `run` (same start grid and calm criterion); for every window: a profile fitted on its
    reference (core.sequential.fit_profile), the oracle thresholds, and the innovations of the window plus
    `seq_horizon` days, unchanged ("none") and, for calm windows, with each change injected from the day after."""
    episodes = []
    for symbol, prices, log_ret, start, calm in window_grid(step, horizon, window, reference_days):
        lo = start - reference_days - WARMUP_DAYS - 1
        segment = prices.iloc[lo:start + window + seq_horizon + 1]
        offset = start - lo
        ref = slice(offset - reference_days, offset)
        rows = slice(offset - WARM, min(offset + window + seq_horizon, len(segment)))
        base = build_features(segment, symbol, dropna=False)
        errors, beta = ridge_errors(base, ref)
        mae = float(np.nanmean(errors[ref]))
        ref_ret = log_ret[start - reference_days:start]
        profile = fit_profile(ref_ret, errors[ref] / mae, base.iloc[ref][FEATURE_COLUMNS], arl_days=arl,
                              seed=len(episodes))
        reference = {"volatility x2": (np.mean(ref_ret), np.std(ref_ret)),
                     "mean shift +0.5 sd/day": (np.mean(ref_ret), np.std(ref_ret)),
                     "error jump +2 MAE": (np.mean(errors[ref] / mae), np.std(errors[ref] / mae)),
                     SEQ_SCENARIOS[1]: (np.mean(base[SCALED_FEATURE].iloc[ref]),
                                        np.std(base[SCALED_FEATURE].iloc[ref]))}
        oracle_ref = {"volatility x2": ref_ret, "mean shift +0.5 sd/day": ref_ret,
                      "error jump +2 MAE": errors[ref] / mae,
                      SEQ_SCENARIOS[1]: base[SCALED_FEATURE].to_numpy(dtype=float)[ref]}
        episode = {"symbol": symbol, "calm": calm, "profile": profile, "reference": reference,
                   "oracle_h": {name: calibrate({name: Stream(oracle_increments(name, reference, values), (0.0,),
                                                              False)}, arl, seed=len(episodes),
                                                calm=calm_days(ref_ret)).thresholds[name][0]
                                for name, values in oracle_ref.items()},  # each oracle alone, same ARL, same calm
                   "data": {"none": _episode_arrays(base, rows, beta, mae)}}
        if calm:
            onset = offset + window
            sd, mean = float(np.nanstd(ref_ret)), float(np.nanmean(ref_ret))
            fns = scenarios(sd, mean)
            for name in ("volatility x2", "mean shift +0.5 sd/day"):
                frame = build_features(_with_returns(segment, onset, fns[name]), symbol, dropna=False)
                episode["data"][name] = _episode_arrays(frame, rows, beta, mae)
            scaled = base.copy()
            scaled.iloc[onset:, scaled.columns.get_loc(SCALED_FEATURE)] *= 10
            episode["data"][SEQ_SCENARIOS[1]] = _episode_arrays(scaled, rows, beta, mae)
            jump = dict(episode["data"]["none"])
            jump["err"] = jump["err"] + np.where(np.arange(len(jump["err"])) >= WARM + window, 2.0, 0.0)
            episode["data"]["error jump +2 MAE"] = jump
        episodes.append(episode)
    return episodes


def _stack(episodes: list[dict], scenario: str, key: str, length: int) -> np.ndarray:
    """(N, length[, F]) array of one input over the episodes, NaN-padded where a series ends early."""
    first = episodes[0]["data"][scenario][key]
    out = np.full((len(episodes), length) + first.shape[1:], np.nan)
    for i, episode in enumerate(episodes):
        values = episode["data"][scenario][key]
        values = values[:length]
        out[i, :len(values)] = values
    return out


def run_sequential(episodes: list[dict], scenario: str, length: int, first: int = 0) -> dict[str, np.ndarray]:
    """Every detector over the episodes' days [first, length), all episodes at once (one CusumArray per detector),
    from zero on day `first`. Returns per detector (N, days) alarm flags, onset (1-based from `first`), stream."""
    profiles = [e["profile"] for e in episodes]
    states = {name: CusumArray.from_states([new_detectors(p)[name] for p in profiles]) for name in profiles[0]["detectors"]}
    inputs = {key: _stack(episodes, scenario, key, length)[:, first:] for key in ("ret", "err", "feat", "prev")}
    length -= first
    scale_streams = profiles[0]["detectors"]["feature_scale"]["streams"]
    cols = [FEATURE_COLUMNS.index(c) for c in scale_streams]
    low = np.array([p["range"]["low"] for p in profiles])
    high = np.array([p["range"]["high"] for p in profiles])
    out = {name: {"alarm": np.zeros((len(episodes), length), bool), "onset": np.zeros((len(episodes), length), int),
                  "stream": np.full((len(episodes), length), -1)} for name in states}
    out["feature_range"] = {"alarm": (inputs["feat"] > high[:, None]) | (inputs["feat"] < low[:, None])}
    for t in range(length):
        u = innovations_many(profiles, inputs["ret"][:, t], inputs["err"][:, t], inputs["feat"][:, t, cols],
                             inputs["prev"][:, t, cols])
        for name, state in states.items():
            summary = state.update(u[name]).alarm_summary()
            out[name]["alarm"][:, t] = summary["detected"]
            out[name]["onset"][:, t] = summary["onset"]
            out[name]["stream"][:, t] = summary["stream"]
    out["feature_range"]["any"] = out["feature_range"]["alarm"].any(axis=2)
    return out


def run_oracle(episodes: list[dict], scenario: str, length: int) -> np.ndarray:
    """(N, length) alarm flags of the oracle CUSUM for `scenario` (restarted after each alarm)."""
    key = {"error jump +2 MAE": "err", SEQ_SCENARIOS[1]: "feat"}.get(scenario, "ret")
    values = _stack(episodes, scenario, key, length)
    if key == "feat":
        values = values[:, :, FEATURE_COLUMNS.index(SCALED_FEATURE)]
    increments = np.stack([oracle_increments(scenario, e["reference"], v) for e, v in zip(episodes, values)])
    h = np.array([e["oracle_h"][scenario] for e in episodes])
    stat, alarms = np.zeros(len(episodes)), np.zeros(values.shape, bool)
    for t in range(length):
        stat = np.where(np.isnan(increments[:, t]), stat, np.maximum(0.0, stat + np.nan_to_num(increments[:, t])))
        alarms[:, t] = stat >= h
        stat[alarms[:, t]] = 0.0
    return alarms


def _relevant(result: dict, scenario: str, scale_stream: int) -> tuple[np.ndarray, np.ndarray]:
    """Alarms of the detector(s) that watch what `scenario` changes, and their onset day (1-based)."""
    if scenario == SEQ_SCENARIOS[1]:  # the scaled feature's own stream of feature_scale, or its range check
        scale = result["feature_scale"]["alarm"] & (result["feature_scale"]["stream"] == scale_stream)
        outside = result["feature_range"]["alarm"][:, :, FEATURE_COLUMNS.index(SCALED_FEATURE)]
        today = np.broadcast_to(np.arange(1, scale.shape[1] + 1), scale.shape)
        return scale | outside, np.where(scale, result["feature_scale"]["onset"], today)
    names = ("error",) if scenario == "error jump +2 MAE" else RETURN_DETECTORS
    alarm = np.any([result[n]["alarm"] for n in names], axis=0)
    onset = np.max([np.where(result[n]["alarm"], result[n]["onset"], 0) for n in names], axis=0)
    return alarm, onset


def _delays(alarm: np.ndarray, onset_day: int) -> np.ndarray:
    """Trading days from the first changed day to the first alarm on or after it (1 = that same day); inf if none."""
    after = alarm[:, onset_day - 1:]
    return np.where(after.any(axis=1), after.argmax(axis=1) + 1, np.inf)


def _delay_row(delays: np.ndarray, horizon: int) -> dict:
    finite = np.sort(delays)
    median = finite[(len(finite) - 1) // 2] if len(finite) else np.inf
    return {"median d": median if np.isfinite(median) else f">{horizon}", "<= 1 d %": 100 * np.mean(delays <= 1),
            "<= 5 d %": 100 * np.mean(delays <= 5), f"<= {horizon} d %": 100 * np.mean(np.isfinite(delays))}


def _model_alarms(result: dict) -> np.ndarray:
    """(N, days): did the model raise any alarm that day (several detectors on one day count once)."""
    return np.any([v["alarm"] for k, v in result.items() if k != "feature_range"] + [result["feature_range"]["any"]],
                  axis=0)


def _false_alarm_row(label: str, group: list[dict], window: int, arl: float, first: int) -> tuple[dict, np.ndarray]:
    """Alarm counts on the windows' days, and per window whether a check on its last day would carry a current
    alarm (one in its last HOLD_DAYS days: what `check_model` adds to the window test's verdict)."""
    result = run_sequential(group, "none", WARM + window, first)
    every = _model_alarms(result)
    alarms = every[:, WARM - first:]  # count only the window's days
    lookback = np.column_stack([every[:, max(0, WARM - first + d - HOLD_DAYS + 1):WARM - first + d + 1].any(axis=1)
                                for d in range(window)])  # (N, window): an alarm current on each day of the window
    count, days = int(alarms.sum()), alarms.size
    low, high = (stats.chi2.ppf(0.025, 2 * count) / 2 if count else 0.0), stats.chi2.ppf(0.975, 2 * count + 2) / 2
    by_detector = ", ".join(f"{k} {int(v['alarm'][:, WARM - first:].sum())}" for k, v in result.items())
    current = alarms[:, -HOLD_DAYS:].any(axis=1)
    return {"windows": label, "n": len(group), "model-days": days, "alarms": count, "per model-day": count / days,
            "x 1/ARL": count / days * arl, "95% CI x 1/ARL": f"{low / days * arl:.2f}-{high / days * arl:.2f}",
            f"any alarm in the {window} d %": 100 * alarms.any(axis=1).mean(),
            "current at the end %": 100 * current.mean(), "current on any day %": 100 * np.mean(lookback),
            "by detector": by_detector}, lookback


def summarise_sequential(episodes: list[dict], window: int, seq_horizon: int, arl: float) -> np.ndarray:
    """Prints false alarms and delays; returns (calm windows, window days): whether a check on that day of that calm
    window carries a current sequential alarm (warm detectors; the last column is the check on its last day)."""
    calm = [e for e in episodes if e["calm"]]
    print(f"\nSequential detectors (core/sequential.py), budget ARL = {arl:.0f} trading days: 1/ARL = {1 / arl:.4f} "
          f"alarms per model-day; {window}-day windows; 'warm': detectors started {WARM} days before the window")
    (warm, current), (fresh, _), (every, _) = (_false_alarm_row("calm, warm", calm, window, arl, 0),
                                               _false_alarm_row("calm, from zero at the window start", calm, window,
                                                                arl, WARM),
                                               _false_alarm_row("all windows (real changes incl.), warm", episodes,
                                                                window, arl, 0))
    print(pd.DataFrame([warm, fresh, every]).round(4).to_string(index=False))
    print(f"(with a per-day alarm rate p = 1/{arl:.0f}, a {window}-day window has an alarm with probability "
          f"1 - (1 - p)^{window} = {100 * (1 - (1 - 1 / arl) ** window):.1f}%: 'any alarm in {window} d' <= 5% needs "
          f"an ARL >= {1 / (1 - 0.95 ** (1 / window)):.0f} d. A check on one day carries an alarm of its last "
          f"{HOLD_DAYS} days: 1 - (1 - p)^{HOLD_DAYS} = {100 * (1 - (1 - 1 / arl) ** HOLD_DAYS):.1f}%)")
    rows, length, onset_day = [], WARM + window + seq_horizon, WARM + window + 1
    scale_stream = calm[0]["profile"]["detectors"]["feature_scale"]["streams"].index(SCALED_FEATURE)
    for scenario in SEQ_SCENARIOS:
        group = [e for e in calm if scenario in e["data"]]
        alarm, onset = _relevant(run_sequential(group, scenario, length), scenario, scale_stream)
        ours = _delays(alarm, onset_day)
        oracle = _delays(run_oracle(group, scenario, length), onset_day)
        found = np.flatnonzero(np.isfinite(ours))
        onset_error = np.abs(onset[found, (onset_day - 2 + ours[found]).astype(int)] - onset_day)
        row_ours, row_oracle = _delay_row(ours, seq_horizon), _delay_row(oracle, seq_horizon)
        numeric = not isinstance(row_ours["median d"], str) and not isinstance(row_oracle["median d"], str)
        rows.append({"change": scenario, "n": len(group)} | row_ours
                    | {f"oracle {k}": v for k, v in row_oracle.items()}
                    | {"median / oracle": row_ours["median d"] / row_oracle["median d"] if numeric else np.nan,
                       "onset error median d": float(np.median(onset_error)) if len(onset_error) else np.nan})
    print(f"\nDetection delay in trading days from the first changed day (1 = alarm that same day), {len(calm)} calm "
          f"windows, warm detectors, horizon {seq_horizon} d. Oracle: Page's CUSUM on the Gaussian log-likelihood "
          f"ratio of the TRUE change (reference mean/sd before, the injected change after), alone at the same ARL")
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    return current


VARIANCE_BANKS = ((0.25, 0.5, 1.0), (0.5, 1.0), (0.5, 1.0, 2.0))  # the volatility detector's drift banks compared


def variance_bank_sweep(episodes: list[dict], step: int, horizon: int, window: int, reference_days: int,
                        seq_horizon: int, arl: float) -> pd.DataFrame:
    """The volatility detector ALONE at the whole ARL, with each drift bank of `VARIANCE_BANKS` (same transform,
    standardiser and calibration as `core.sequential`), on the calm windows' volatility x2 injection: median delay
    next to the oracle's, and false alarms per model-day before the change. How the product's bank was chosen."""
    spec = DETECTORS["returns_variance"]
    calm = [(log_ret[start - reference_days:start], episode) for (_, _, log_ret, start, _), episode
            in zip(window_grid(step, horizon, window, reference_days), episodes) if episode["calm"]]
    length, onset_day = WARM + window + seq_horizon, WARM + window + 1
    oracle = _delays(run_oracle([e for _, e in calm], "volatility x2", length), onset_day)
    rows = []
    for drifts in VARIANCE_BANKS:
        thresholds, inputs = [], np.full((len(calm), length), np.nan)
        for i, (reference, episode) in enumerate(calm):
            standardise = Standardiser.fit(reference, spec.transform, spec.clip)
            thresholds.append(calibrate({"v": Stream(standardise(reference), drifts, spec.two_sided)}, arl, seed=i,
                                        calm=calm_days(reference)).thresholds["v"])
            changed = standardise(episode["data"]["volatility x2"]["ret"][:length])
            inputs[i, :len(changed)] = changed
        detector, alarms = CusumArray(np.array(thresholds), drifts, spec.two_sided), np.zeros(inputs.shape, bool)
        for t in range(length):
            alarms[:, t] = detector.update(inputs[:, t]).drift_detected
        ours = _delays(alarms, onset_day)
        median, oracle_median = (float(np.sort(d)[(len(d) - 1) // 2]) for d in (ours, oracle))
        rows.append({"drifts (sd)": "-".join(f"{k:g}" for k in drifts), "n": len(calm), "median d": median,
                     "oracle median d": oracle_median, "median / oracle": median / oracle_median,
                     "<= 5 d %": 100 * np.mean(ours <= 5), f"<= {seq_horizon} d %": 100 * np.mean(np.isfinite(ours)),
                     "false alarms x 1/ARL (before the change)": alarms[:, :WARM + window].mean() * arl})
    return pd.DataFrame(rows)


def daily_window_tests(step: int, horizon: int, window: int, reference_days: int, alpha: float, settings) -> list[np.ndarray]:
    """Per calm window (the order of `run`): the window test's verdict on each of its days k = MIN_SAMPLES..window,
    as `check_model` gives it for a model trained on the reference: `compare_frames` (serial, the budget's window
    alpha) of the reference against the k days after the training window (the last `window` of them, so day
    `window` is the last-day check). Days before MIN_SAMPLES have no check (check_model refuses them)."""
    verdicts = []
    for symbol, prices, _, start, calm in window_grid(step, horizon, window, reference_days):
        if not calm:
            continue
        lo = start - reference_days - WARMUP_DAYS - 1
        features = build_features(prices.iloc[lo:start + window], symbol, dropna=False)[FEATURE_COLUMNS]
        offset = start - lo
        reference = features.iloc[offset - reference_days:offset]
        verdicts.append(np.array([compare_frames(reference, features.iloc[offset:offset + k], settings=settings,
                                                 serial=True, alpha=alpha).dataset_drift
                                  for k in range(MIN_SAMPLES, window + 1)]))
    return verdicts


def cluster_bootstrap(alarms: np.ndarray, checked: np.ndarray, repeats: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of sum(alarms) / sum(checked), resampling whole clusters (rows) with replacement: checks on
    nearby days of one stretch are correlated, so a binomial CI over the checks would be too narrow."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(alarms), (repeats, len(alarms)))
    per_alarm, per_checked = alarms.sum(axis=1), checked.sum(axis=1)
    rates = per_alarm[rows].sum(axis=1) / per_checked[rows].sum(axis=1)
    low, high = np.quantile(rates, [0.025, 0.975])
    return float(low), float(high)


def block_bootstrap(alarms: np.ndarray, checked: np.ndarray, symbols: np.ndarray, block: int, repeats: int = 4000,
                    seed: int = 0) -> np.ndarray:
    """Bootstrap replicates of sum(alarms) / sum(checked) over the bench's start grid (one row per window start, calm or
    not: a window that is not calm has checked = 0), by a moving-block bootstrap per ticker: blocks of `block`
    consecutive starts, so windows that share days (starts closer than the window plus its warm-up) are resampled
    together; tickers are kept (stratified). Longer blocks also carry the slower dependence of overlapping
    references; the caller prints several lengths."""
    rng = np.random.default_rng(seed)
    alarm_sum, checked_sum = np.zeros(repeats), np.zeros(repeats)
    for symbol in np.unique(symbols):
        a, c = alarms[symbols == symbol], checked[symbols == symbol]
        length = min(block, len(a))
        n_blocks = -(-len(a) // length)
        starts = rng.integers(0, len(a) - length + 1, (repeats, n_blocks))
        rows = (starts[:, :, None] + np.arange(length)).reshape(repeats, -1)[:, :len(a)]
        alarm_sum += a[rows].sum(axis=1)
        checked_sum += c[rows].sum(axis=1)
    return alarm_sum / checked_sum


def effective_clopper_pearson(alarms: int, n: int, replicates: np.ndarray) -> tuple[float, float]:
    """Clopper-Pearson 95% CI at the effective sample size n / design effect (the block bootstrap's variance over the
    binomial one, at least 1; Korn & Graubard 1998): with few alarms a percentile bootstrap CI is too narrow."""
    rate = alarms / n
    effect = max(1.0, float(np.var(replicates)) / (rate * (1 - rate) / n)) if 0 < alarms < n else 1.0
    size, count = n / effect, alarms / effect
    low = stats.beta.ppf(0.025, count, size - count + 1) if count > 0 else 0.0
    return float(low), float(stats.beta.ppf(0.975, count + 1, size - count))


def overlap_section(last: np.ndarray, every: np.ndarray, grid: tuple[np.ndarray, np.ndarray], step: int,
                    window: int) -> None:
    """(a) and (b) again with CIs that respect overlap: at a start spacing below the days a check depends on (the
    window plus the detectors' WARM-day warm-up), neighbouring calm windows share days, so neither a binomial CI
    over windows nor a bootstrap by window holds. Blocks of 100-1000 trading days of starts per ticker (1000, the
    reference's length: only a few blocks per ticker, so that CI is the crudest)."""
    symbols, calm = grid
    last_alarms, every_alarms = np.zeros(len(calm)), np.zeros(len(calm))
    last_alarms[calm], every_alarms[calm] = last, every.sum(axis=1)
    every_checked = np.where(calm, every.shape[1], 0)
    rows = []
    for days in (100, 250, 500, 1000):
        block = -(-days // step)
        a_reps = block_bootstrap(last_alarms, calm.astype(float), symbols, block)
        b_low, b_high = np.quantile(block_bootstrap(every_alarms, every_checked.astype(float), symbols, block),
                                    [0.025, 0.975])
        a_low, a_high = np.quantile(a_reps, [0.025, 0.975])
        e_low, e_high = effective_clopper_pearson(int(last.sum()), len(last), a_reps)
        rows.append({"block (trading days of starts)": f"{days} ({block} starts)",
                     "(a) last day 95% CI % (percentile)": f"{100 * a_low:.1f}-{100 * a_high:.1f}",
                     "(a) Clopper-Pearson at n / design effect %": f"{100 * e_low:.1f}-{100 * e_high:.1f}",
                     "design effect": round(float(np.var(a_reps)) / (last.mean() * (1 - last.mean()) / len(last)), 2),
                     "(b) every day 95% CI %": f"{100 * b_low:.1f}-{100 * b_high:.1f}"})
    print(f"Combined verdict, CIs by a moving-block bootstrap over window starts per ticker ({len(calm)} starts "
          f"every {step} d, {int(calm.sum())} calm, {len(np.unique(symbols))} tickers; a last-day check depends on "
          f"{WARM + window} d of returns, plus its {get_settings().train_window_days}-d reference which overlaps its "
          f"neighbours' at any step): (a) {100 * last.mean():.2f}% ({int(last.sum())} of {len(last)}), "
          f"(b) {100 * every.mean():.2f}% ({int(every.sum())} of {every.size})")
    print(pd.DataFrame(rows).to_string(index=False))


def combined_section(last_day: np.ndarray, daily: list[np.ndarray], current: np.ndarray, window: int, budget,
                     grid: tuple[np.ndarray, np.ndarray], step: int) -> None:
    """The combined verdict (window test OR a sequential alarm current), on each calm window's last day and on
    every day of it on which check_model runs, with a cluster bootstrap CI by calm window."""
    n = len(last_day)
    first = MIN_SAMPLES - 1  # column of day MIN_SAMPLES
    tests = np.vstack(daily)  # (N, window - MIN_SAMPLES + 1)
    sequential = current[:, first:]
    both = tests | sequential
    ones = np.ones_like(both, dtype=bool)
    last = last_day | current[:, -1]
    low, high = stats.beta.ppf(0.025, last.sum(), n - last.sum() + 1), stats.beta.ppf(0.975, last.sum() + 1, n - last.sum())
    agree = int(np.sum(tests[:, -1] == last_day))
    print(f"\nFalse alarms of one drift check on calm windows, {budget.describe()}. A check = the window test "
          f"(compare_frames, alpha {budget.window:.3g}) OR a sequential alarm current (one in its last {HOLD_DAYS} days)."
          f"\n(a) On each calm window's last day ({n} checks): window test {100 * last_day.mean():.1f}%, sequential "
          f"{100 * current[:, -1].mean():.1f}%, combined {100 * last.mean():.1f}% ({int(last.sum())} of {n}; binomial "
          f"95% CI {100 * np.nan_to_num(low):.1f}-{100 * high:.1f}%, windows taken as independent)."
          f"\n(b) On every day {MIN_SAMPLES}..{window} of each calm window (check_model needs {MIN_SAMPLES} days after "
          f"training; {both.size} checks, {n} windows; the window test on day {window} agrees with (a) on {agree} of {n}):")
    rows = []
    for label, flags in (("window test", tests), (f"sequential current (last {HOLD_DAYS} d)", sequential),
                         ("combined (either)", both)):
        w_low, w_high = cluster_bootstrap(flags, ones)
        rows.append({"verdict": label, "checks": flags.size, "alarms": int(flags.sum()), "rate %": 100 * flags.mean(),
                     "95% CI by calm window %": f"{100 * w_low:.1f}-{100 * w_high:.1f}",
                     "windows with any alarm %": 100 * flags.any(axis=1).mean(), "budget %": 100 * (
                         budget.window if label == "window test" else budget.sequential if label.startswith("seq")
                         else budget.total)})
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    spans, rows = [(MIN_SAMPLES, 10), (11, 20), (21, 29), (window, window)], []
    for low_day, high_day in spans:  # the window test has fewer days (less power) early in the window
        cols = slice(low_day - MIN_SAMPLES, high_day - MIN_SAMPLES + 1)
        c_low, c_high = cluster_bootstrap(both[:, cols], ones[:, cols])
        rows.append({"days of the window": f"{low_day}-{high_day}" if low_day != high_day else f"{low_day}",
                     "checks": both[:, cols].size, "window test %": 100 * tests[:, cols].mean(),
                     "sequential %": 100 * sequential[:, cols].mean(), "combined %": 100 * both[:, cols].mean(),
                     "95% CI by calm window %": f"{100 * c_low:.1f}-{100 * c_high:.1f}"})
    print("by day of the window (days after the training window):")
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    overlap_section(last, both, grid, step, window)


def speed(profile: dict, n_models: int = 1000, repeats: int = 20) -> None:
    """One day's update for `n_models` models: vectorised (innovations_many + one CusumArray.update per detector)
    vs the scalar path (innovations + Cusum.update per model), measured in the same run."""
    rng = np.random.default_rng(0)
    streams = profile["detectors"]["feature_scale"]["streams"]
    ret, err = rng.normal(0, 0.01, n_models), np.abs(rng.normal(0, 1.2, n_models))
    feat = rng.normal(0, 1, (n_models, len(streams)))
    prev = feat + rng.normal(0, 0.1, feat.shape)
    profiles = [profile] * n_models
    arrays = {n: CusumArray.from_states([d] * n_models) for n, d in new_detectors(profile).items()}
    timings, stacked = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        standardisers = stack_standardisers(profiles)  # once a day: N profiles' standardisers as arrays
        stacked.append(time.perf_counter() - started)
        u = innovations_many(profiles, ret, err, feat, prev, standardisers)
        for name, state in arrays.items():
            state.update(u[name], day="2020-01-02")
        timings.append(time.perf_counter() - started)
    scalar = [new_detectors(profile) for _ in range(n_models)]
    started = time.perf_counter()
    for i, detectors in enumerate(scalar):
        u = innovations(profile, ret[i], err[i], dict(zip(streams, feat[i])), dict(zip(streams, prev[i])))
        for name, state in detectors.items():
            state.update(u[name], day="2020-01-02")
    loop = time.perf_counter() - started
    started = time.perf_counter()
    restored = unpack(profiles, pack(arrays))  # the stored form (core/watch_step.py) and back
    persist = time.perf_counter() - started
    assert all(np.array_equal(restored[n].stat, arrays[n].stat) for n in arrays)
    vectorised, stacking = float(np.median(timings)), float(np.median(stacked))
    print(f"\nSpeed: one day's update of {len(arrays)} detectors for {n_models} models: vectorised "
          f"{1000 * vectorised:.1f} ms (goal < 1 s; of which {1000 * stacking:.1f} ms stack the profiles' "
          f"standardisers), scalar loop {1000 * loop:.0f} ms ({loop / vectorised:.1f}x); state packed and unpacked "
          f"(core/watch_step.py) for all {n_models} models {1000 * persist:.0f} ms. The product's day, reads and writes "
          f"included: bench/watch_bench.py")


def window_section(args: argparse.Namespace, settings) -> np.ndarray:
    """Prints the window check's grid; returns, per calm window in order, its verdict at the configured thresholds."""
    started = time.perf_counter()
    if args.cache and Path(args.cache).exists():
        result = pd.read_pickle(args.cache)
    else:
        result = run(args.step, args.horizon, args.window, args.reference_days)
        if args.cache:
            pd.to_pickle(result, args.cache)
    print(f"{len(result['records'])} checks on the bundled series in {time.perf_counter() - started:.0f} s "
          f"(reference {args.reference_days} d, window {args.window} d, horizon {args.horizon} d)")
    configured = (settings.drift_psi_threshold, settings.drift_share_threshold)
    alpha = check_budget(settings).window  # the window test's share of a check's false-alarm budget
    for psi_threshold in (0.25, 0.5):
        for share in (0.1, 0.15, 0.2, 0.3):
            frame = evaluate(result["records"], psi_threshold, share, alpha)
            marker = "  <- configured" if (psi_threshold, share) == configured else ""
            print(f"\nPSI >= {psi_threshold}, KS p < {alpha:.3g}/20, PSI p < {alpha:.3g}, share >= {share:.0%}{marker}")
            print(pd.DataFrame(summarise(frame, args.horizon)).round(1).to_string(index=False))
    print(f"\nThe window test alone at the configured thresholds, by the alpha of its rule (KS p < alpha / 20, PSI p < "
          f"alpha): {drift_ks_alpha_sweep(result['records'], configured, settings.drift_ks_alpha, alpha)}")
    frame = evaluate(result["records"], *configured, alpha)
    return frame[(frame["scenario"] == "none") & frame["calm"]]["dataset"].to_numpy(dtype=bool)


def drift_ks_alpha_sweep(records: list[dict], configured: tuple[float, float], total: float, window: float) -> str:
    """Calm windows' false alarms and volatility x2 detections within 10 days, at the check's whole budget and
    at the window test's share of it (what `check_model` uses)."""
    parts = []
    for alpha in sorted({total, window, 0.04, 0.03, 0.02}, reverse=True):
        rows = {r["scenario"]: r for r in summarise(evaluate(records, *configured, alpha), 10)}
        vol = next(v for k, v in rows.items() if k.startswith("volatility x2"))
        tag = " (whole budget)" if alpha == total else " (window share, used)" if alpha == window else ""
        parts.append(f"alpha {alpha:.3g}{tag}: calm false alarms {rows['calm windows: false alarms']['alarm %']:.1f}%, "
                     f"vol x2 caught <= 10 d {vol['detected <= 10 d %']:.1f}%")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=120, help="trading days between windows")
    parser.add_argument("--horizon", type=int, default=10, help="trading days after onset to wait for a detection")
    parser.add_argument("--window", type=int, default=settings.drift_window_days)
    parser.add_argument("--reference-days", type=int, default=settings.train_window_days)
    parser.add_argument("--cache", help="pickle file: reuse the computed checks if it exists, else write them")
    parser.add_argument("--arl", type=float, default=settings.drift_arl_days, help="sequential: false-alarm budget, days")
    parser.add_argument("--seq-horizon", type=int, default=120, help="sequential: trading days watched after onset")
    parser.add_argument("--seq-step", type=int, help="sequential: trading days between windows (default: --step)")
    parser.add_argument("--seq-cache", help="pickle file: reuse the sequential windows (profiles, oracles, inputs) "
                                             "if it exists, else write them (same --step / --arl only)")
    parser.add_argument("--daily-cache", help="pickle file: reuse the window tests on every day of the calm windows")
    parser.add_argument("--only", choices=("window", "sequential"), help="run one section only")
    parser.add_argument("--bank-sweep", action="store_true", help="sequential: also run the volatility detector alone "
                                                                   "with each drift bank of VARIANCE_BANKS (~15 s a bank)")
    args = parser.parse_args(argv)
    pd.set_option("display.width", 250)
    window_verdicts = window_section(args, settings) if args.only != "sequential" else None
    if args.only != "window":
        started = time.perf_counter()
        if args.seq_cache and Path(args.seq_cache).exists():
            episodes = pd.read_pickle(args.seq_cache)
        else:
            episodes = sequential_episodes(args.seq_step or args.step, args.horizon, args.window, args.reference_days,
                                           args.seq_horizon, args.arl)
            if args.seq_cache:
                pd.to_pickle(episodes, args.seq_cache)
        print(f"\n{len(episodes)} windows for the sequential detectors, profiles and oracles fitted in "
              f"{time.perf_counter() - started:.0f} s ({(time.perf_counter() - started) / len(episodes):.2f} s per window)")
        current = summarise_sequential(episodes, args.window, args.seq_horizon, args.arl)
        if args.bank_sweep:
            print(f"\nThe volatility detector alone (returns_variance, at the whole ARL {args.arl:.0f}) by drift bank, on the "
                  f"calm windows' volatility x2 (the product's bank: {'-'.join(f'{k:g}' for k in DETECTORS['returns_variance'].drifts)})")
            print(variance_bank_sweep(episodes, args.seq_step or args.step, args.horizon, args.window,
                                      args.reference_days, args.seq_horizon, args.arl).round(2).to_string(index=False))
        if window_verdicts is not None and len(window_verdicts) == len(current):  # the same calm windows
            budget, started = check_budget(settings), time.perf_counter()
            if args.daily_cache and Path(args.daily_cache).exists():
                daily = pd.read_pickle(args.daily_cache)
            else:
                daily = daily_window_tests(args.step, args.horizon, args.window, args.reference_days, budget.window, settings)
                if args.daily_cache:
                    pd.to_pickle(daily, args.daily_cache)
            print(f"\nwindow tests on every day of the calm windows: {sum(map(len, daily))} in "
                  f"{time.perf_counter() - started:.0f} s")
            grid = [(symbol, calm) for symbol, _, _, _, calm in window_grid(args.step, args.horizon, args.window,
                                                                             args.reference_days)]
            combined_section(window_verdicts, daily, current, args.window, budget,
                             (np.array([g[0] for g in grid]), np.array([g[1] for g in grid])), args.step)
        speed(episodes[0]["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
