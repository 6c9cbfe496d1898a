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


def _rsi(close: pd.Series, period: int = 14) -> pd.Series:
    """Wilder's RSI (exponential smoothing with alpha = 1/period), 0..100."""
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / period, adjust=False, min_periods=period).mean()
    rs = gain / loss.replace(0.0, np.nan)
    return (100 - 100 / (1 + rs)).fillna(100.0).where(gain.notna())


def build_features(prices: pd.DataFrame, symbol: str = "", dropna: bool = True) -> pd.DataFrame:
    """Feature frame (FEATURE_COLUMNS + `target` + `close`) indexed by date.

    `target` is log(close[t+1] / close[t]); it is NaN on the last row, which is the row a live
    prediction uses. `close` rides along to turn predicted returns into prices. With `dropna`,
    warm-up rows (incomplete windows) are dropped; the last row is always kept.
    """
    prices = validate_prices(prices, symbol or prices.attrs.get("symbol", "prices"))
    close = prices["close"].astype(float)
    volume = prices["volume"].astype(float)
    log_close = np.log(close)
    ret = log_close.diff()

    columns: dict[str, pd.Series] = {}
    for h in RETURN_HORIZONS:
        columns[f"ret_{h}d"] = log_close.diff(h)
    for w in ROLLING_WINDOWS:
        columns[f"ret_mean_{w}"] = ret.rolling(w, min_periods=w).mean()
    for w in ROLLING_WINDOWS:
        columns[f"volatility_{w}"] = ret.rolling(w, min_periods=w).std()
    for w in MA_WINDOWS:
        columns[f"close_to_sma_{w}"] = close / close.rolling(w, min_periods=w).mean() - 1.0
    columns["rsi_14"] = _rsi(close)
    ema12 = close.ewm(span=12, adjust=False).mean()
    ema26 = close.ewm(span=26, adjust=False).mean()
    macd = (ema12 - ema26) / close  # scale-free: comparable across price levels and tickers
    signal = macd.ewm(span=9, adjust=False).mean()
    columns["macd"], columns["macd_signal"], columns["macd_hist"] = macd, signal, macd - signal
    log_volume = np.log1p(volume)
    vol_mean = log_volume.rolling(20, min_periods=20).mean()
    vol_std = log_volume.rolling(20, min_periods=20).std()
    columns["volume_z_20"] = ((log_volume - vol_mean) / vol_std.replace(0.0, np.nan)).fillna(0.0).where(vol_mean.notna())
    columns["day_of_week"] = pd.Series(prices.index.day_of_week.astype(float), index=prices.index)

    values = np.column_stack([columns[name].to_numpy(dtype=float) for name in FEATURE_COLUMNS])
    values[:WARMUP_DAYS] = np.nan
    frame = pd.DataFrame(values, index=prices.index, columns=FEATURE_COLUMNS)
    frame[TARGET] = ret.shift(-1)
    frame["close"] = close
    if dropna:
        usable = frame[FEATURE_COLUMNS].notna().all(axis=1)
        frame = frame.loc[usable]
    return frame


def training_rows(features: pd.DataFrame) -> pd.DataFrame:
    """Rows with a known target (all but the last), for fitting and validation."""
    return features.loc[features[TARGET].notna()]


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
