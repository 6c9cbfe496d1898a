"""Quality of the drift detector on the bundled real price series: false alarms and detection delay.

For windows spread over every bundled ticker: reference = the `train_window_days` trading days of
features before the window (what a model trained there would see); current = the next
`drift_window_days` days. (a) Calm windows, no change injected, count false alarms. A window is
"calm" by a criterion independent of the detector: its 30-day realised volatility and 30-day return
both lie inside the 10th-90th percentile of the reference's own rolling 30-day values. (b) From the
day after a calm window, inject a change and re-run the check each trading day on the last
`drift_window_days` days: detection rate within the horizon and delay in trading days.

Prints a grid of (PSI threshold, share of drifted features) so the defaults are chosen on data.

    .venv/bin/python bench/drift_quality.py [--step 60] [--horizon 15] [--window 30]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import get_settings  # noqa: E402
from core.drift import column_stats, distribution_drift, volatility_check  # noqa: E402
from core.features import FEATURE_COLUMNS, WARMUP_DAYS, build_features  # noqa: E402
from core.market import bundled_frame  # noqa: E402

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
            roll_vol = pd.Series(ref_ret).rolling(window).std().dropna()
            roll_ret = pd.Series(ref_ret).rolling(window).sum().dropna()
            cur_vol, cur_ret = np.std(log_ret[cur_rows], ddof=1), np.sum(log_ret[cur_rows])
            calm = bool(roll_vol.quantile(0.1) <= cur_vol <= roll_vol.quantile(0.9)
                        and roll_ret.quantile(0.1) <= cur_ret <= roll_ret.quantile(0.9))
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


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step", type=int, default=120, help="trading days between windows")
    parser.add_argument("--horizon", type=int, default=10, help="trading days after onset to wait for a detection")
    parser.add_argument("--window", type=int, default=settings.drift_window_days)
    parser.add_argument("--reference-days", type=int, default=settings.train_window_days)
    parser.add_argument("--cache", help="pickle file: reuse the computed checks if it exists, else write them")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.cache and Path(args.cache).exists():
        result = pd.read_pickle(args.cache)
    else:
        result = run(args.step, args.horizon, args.window, args.reference_days)
        if args.cache:
            pd.to_pickle(result, args.cache)
    print(f"{len(result['records'])} checks on the bundled series in {time.perf_counter() - started:.0f} s "
          f"(reference {args.reference_days} d, window {args.window} d, horizon {args.horizon} d)")
    pd.set_option("display.width", 200)
    configured = (settings.drift_psi_threshold, settings.drift_share_threshold)
    for psi_threshold in (0.25, 0.5):
        for share in (0.1, 0.15, 0.2, 0.3):
            frame = evaluate(result["records"], psi_threshold, share, settings.drift_ks_alpha)
            marker = "  <- configured" if (psi_threshold, share) == configured else ""
            print(f"\nPSI >= {psi_threshold}, KS p < {settings.drift_ks_alpha}/20, share >= {share:.0%}{marker}")
            print(pd.DataFrame(summarise(frame, args.horizon)).round(1).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
