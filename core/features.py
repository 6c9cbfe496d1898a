"""Features: OHLCV -> the model's feature frame and its target (next-day log return).

Every feature at date t uses prices up to and including t only (rolling windows, causal EWMs,
lags), which `tests/test_features.py` proves by recomputing on data truncated at t.
`FEATURE_COLUMNS` is the single feature list; `feature_signature` hashes it with the dtypes so a
model trained on another schema is refused at load time.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from core.market import MarketDataError, validate_prices

RETURN_HORIZONS = (1, 2, 3, 5, 10)
ROLLING_WINDOWS = (5, 10, 20)
MA_WINDOWS = (10, 20, 50)
WARMUP_DAYS = 50  # the longest window (SMA 50) must be full before a row is usable

FEATURE_COLUMNS: list[str] = (
    [f"ret_{h}d" for h in RETURN_HORIZONS]
    + [f"ret_mean_{w}" for w in ROLLING_WINDOWS]
    + [f"volatility_{w}" for w in ROLLING_WINDOWS]
    + [f"close_to_sma_{w}" for w in MA_WINDOWS]
    + ["rsi_14", "macd", "macd_signal", "macd_hist", "volume_z_20", "day_of_week"]
)
TARGET = "target"


def _lag_diff(x: np.ndarray, h: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    out[h:] = x[h:] - x[:-h]
    return out


def _rolling(x: np.ndarray, window: int, reducer) -> np.ndarray:
    """A trailing-window statistic (NaN until the window is full): row t sees x[t-window+1..t] only."""
    out = np.full_like(x, np.nan)
    if len(x) >= window:
        out[window - 1:] = reducer(sliding_window_view(x, window), axis=1)
    return out


def _rolling_std(x: np.ndarray, axis: int) -> np.ndarray:
    return np.std(x, axis=axis, ddof=1)


def _ewm(x: np.ndarray, alpha: float) -> np.ndarray:
    """y[t] = a x[t] + (1 - a) y[t-1], y[0] = x[0]: pandas' `ewm(alpha, adjust=False).mean()` itself (its compiled
    loop; the same numbers as scipy's `lfilter`, bit for bit), so building features never imports scipy.signal,
    ~2 s of every page's first visit (issue 16)."""
    return pd.Series(x, copy=False).ewm(alpha=alpha, adjust=False).mean().to_numpy()


def _rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's RSI (exponential smoothing with alpha = 1/period), 0..100; 100 when there were no losses."""
    out = np.full_like(close, np.nan)
    if len(close) <= period:
        return out
    delta = np.diff(close)
    gain = _ewm(np.clip(delta, 0, None), 1 / period)
    loss = _ewm(np.clip(-delta, 0, None), 1 / period)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = np.where(loss > 0, 100 - 100 / (1 + gain / loss), 100.0)
    out[1:] = rsi
    out[:period] = np.nan
    return out


def build_features(prices: pd.DataFrame, symbol: str = "", dropna: bool = True) -> pd.DataFrame:
    """Feature frame (FEATURE_COLUMNS + `target` + `close`) indexed by date.

    `target` is log(close[t+1] / close[t]); it is NaN on the last row, which is the row a live
    prediction uses. `close` rides along to turn predicted returns into prices. With `dropna`,
    warm-up rows (incomplete windows) are dropped; the last row is always kept.
    Built with numpy on whole columns (the serving path calls this on every request): trailing
    windows via `sliding_window_view`, EWMs via pandas' compiled `ewm` each; `tests/test_features.py`
    checks every column against the pandas formulation.
    """
    prices = validate_prices(prices, symbol or prices.attrs.get("symbol", "prices"))
    close = prices["close"].to_numpy(dtype=float)
    log_close = np.log(close)
    ret = _lag_diff(log_close, 1)

    columns: dict[str, np.ndarray] = {}
    for h in RETURN_HORIZONS:
        columns[f"ret_{h}d"] = _lag_diff(log_close, h)
    for w in ROLLING_WINDOWS:
        columns[f"ret_mean_{w}"] = _rolling(ret, w, np.mean)
        columns[f"volatility_{w}"] = _rolling(ret, w, _rolling_std)
    for w in MA_WINDOWS:
        columns[f"close_to_sma_{w}"] = close / _rolling(close, w, np.mean) - 1.0
    columns["rsi_14"] = _rsi(close)
    macd = (_ewm(close, 2 / 13) - _ewm(close, 2 / 27)) / close  # spans 12 and 26, scale-free
    signal = _ewm(macd, 2 / 10)  # span 9
    columns["macd"], columns["macd_signal"], columns["macd_hist"] = macd, signal, macd - signal
    log_volume = np.log1p(prices["volume"].to_numpy(dtype=float))
    vol_mean, vol_std = _rolling(log_volume, 20, np.mean), _rolling(log_volume, 20, _rolling_std)
    with np.errstate(divide="ignore", invalid="ignore"):
        volume_z = np.where(vol_std > 0, (log_volume - vol_mean) / vol_std, 0.0)
    columns["volume_z_20"] = np.where(np.isnan(vol_mean), np.nan, volume_z)
    columns["day_of_week"] = prices.index.day_of_week.to_numpy(dtype=float)

    values = np.column_stack([columns[name] for name in FEATURE_COLUMNS])
    values[:WARMUP_DAYS] = np.nan
    target = np.append(ret[1:], np.nan)
    frame = pd.DataFrame(np.column_stack([values, target, close]), index=prices.index,
                         columns=[*FEATURE_COLUMNS, TARGET, "close"])
    if dropna:
        frame = frame.loc[~np.isnan(values).any(axis=1)]
    return frame


def training_rows(features: pd.DataFrame) -> pd.DataFrame:
    """Rows with a known target (all but the last), for fitting and validation."""
    return features.loc[features[TARGET].notna()]


def direction_labels(rows: pd.DataFrame) -> np.ndarray:
    """The direction target: 1 when the next close is above this row's close (target log return > 0), else 0.

    Built from `target` = log(close[t+1] / close[t]) only, so it sees exactly one close after t;
    rows without a known next close (the live row) are refused rather than labelled "down".
    """
    target = rows[TARGET].to_numpy(dtype=float)
    if np.isnan(target).any():
        raise ValueError("direction_labels needs rows with a known next close (see training_rows).")
    return (target > 0).astype(int)


def today_up(rows: pd.DataFrame) -> np.ndarray:
    """1 when the row's own close is above the previous close (what the "same as today" baseline repeats)."""
    return (rows["ret_1d"].to_numpy(dtype=float) > 0).astype(int)


def feature_signature(columns: list[str], dtypes: list[str] | None = None) -> str:
    """sha256 of names + dtypes in order: equal only for the same schema."""
    dtypes = dtypes or ["float64"] * len(columns)
    text = "|".join(f"{name}:{dtype}" for name, dtype in zip(columns, dtypes, strict=True))
    return hashlib.sha256(text.encode()).hexdigest()


CURRENT_SIGNATURE = feature_signature(FEATURE_COLUMNS)


def check_feature_frame(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The model input matrix, or a MarketDataError naming missing columns or non-finite values."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MarketDataError(f"feature frame lacks {', '.join(missing)}: it was built by another feature version.")
    matrix = frame[columns].to_numpy(dtype=float)
    if not np.isfinite(matrix).all():
        raise MarketDataError("feature frame has NaN or infinite values: not enough history before this date.")
    return matrix
