"""Features: the list, the target, and the proof that no feature at t uses data after t."""
import numpy as np
import pandas as pd
import pytest

from core.features import (CURRENT_SIGNATURE, FEATURE_COLUMNS, TARGET, WARMUP_DAYS, build_features,
                           check_feature_frame, feature_signature)
from core.market import MarketDataError, load_prices


@pytest.fixture(scope="module")
def prices(demo_registry):
    return load_prices("AAPL", start="2009-01-01", end="2011-12-31")


def test_feature_list_is_the_documented_one():
    assert len(FEATURE_COLUMNS) == 20
    for name in ["ret_1d", "ret_2d", "ret_3d", "ret_5d", "ret_10d", "volatility_20", "close_to_sma_50", "rsi_14",
                 "macd", "volume_z_20", "day_of_week"]:
        assert name in FEATURE_COLUMNS


def test_target_is_next_day_log_return(prices):
    frame = build_features(prices, "AAPL")
    close = prices["close"]
    day, following = frame.index[10], close.index[close.index.get_loc(frame.index[10]) + 1]
    assert frame.loc[day, TARGET] == pytest.approx(np.log(close[following] / close[day]))
    assert np.isnan(frame[TARGET].iloc[-1])  # the live row: tomorrow is unknown
    assert frame.loc[day, "ret_1d"] == pytest.approx(np.log(close[day] / close.iloc[close.index.get_loc(day) - 1]))


def test_no_feature_uses_data_after_t(prices):
    """Recompute on data truncated at t: every feature at t must be identical."""
    full = build_features(prices, "AAPL", dropna=False)
    for cut in [WARMUP_DAYS + 5, 120, 300, len(prices) - 2]:
        truncated = build_features(prices.iloc[: cut + 1], "AAPL", dropna=False)
        day = prices.index[cut]
        np.testing.assert_allclose(truncated.loc[day, FEATURE_COLUMNS].to_numpy(dtype=float),
                                   full.loc[day, FEATURE_COLUMNS].to_numpy(dtype=float), rtol=1e-12, atol=1e-12,
                                   err_msg=f"a feature at {day.date()} changed when later data was removed")


def test_changing_the_future_does_not_change_the_past(prices):
    shocked = prices.copy()
    shocked.iloc[200:, shocked.columns.get_indexer(["open", "high", "low", "close"])] *= 3.0
    shocked.iloc[200:, shocked.columns.get_loc("volume")] *= 10
    a = build_features(prices, "AAPL", dropna=False).iloc[:200]
    b = build_features(shocked, "AAPL", dropna=False).iloc[:200]
    pd.testing.assert_frame_equal(a[FEATURE_COLUMNS], b[FEATURE_COLUMNS])


def test_warmup_rows_are_dropped_and_values_finite(prices):
    frame = build_features(prices, "AAPL")
    assert frame.index[0] == prices.index[WARMUP_DAYS]
    assert np.isfinite(frame[FEATURE_COLUMNS].to_numpy()).all()
    assert frame["rsi_14"].between(0, 100).all()
    assert set(frame["day_of_week"].unique()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_signature_changes_with_names_order_and_dtypes():
    assert feature_signature(FEATURE_COLUMNS) == CURRENT_SIGNATURE
    assert feature_signature(FEATURE_COLUMNS[::-1]) != CURRENT_SIGNATURE
    assert feature_signature(FEATURE_COLUMNS, ["float32"] * 20) != CURRENT_SIGNATURE


def test_check_feature_frame_errors(prices):
    frame = build_features(prices, "AAPL")
    with pytest.raises(MarketDataError, match="lacks rsi_14"):
        check_feature_frame(frame.drop(columns="rsi_14"), FEATURE_COLUMNS)
    frame.iloc[3, 0] = np.nan
    with pytest.raises(MarketDataError, match="NaN or infinite"):
        check_feature_frame(frame, FEATURE_COLUMNS)


def _pandas_reference(prices: pd.DataFrame) -> pd.DataFrame:
    """The features written the plain pandas way, to check the numpy implementation column by column."""
    close, log_close = prices["close"], np.log(prices["close"])
    ret = log_close.diff()
    out = {f"ret_{h}d": log_close.diff(h) for h in (1, 2, 3, 5, 10)}
    for w in (5, 10, 20):
        out[f"ret_mean_{w}"] = ret.rolling(w).mean()
        out[f"volatility_{w}"] = ret.rolling(w).std()
    for w in (10, 20, 50):
        out[f"close_to_sma_{w}"] = close / close.rolling(w).mean() - 1
    delta = close.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / 14, adjust=False).mean()
    out["rsi_14"] = 100 - 100 / (1 + gain / loss)
    macd = (close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean()) / close
    out["macd"], out["macd_signal"] = macd, macd.ewm(span=9, adjust=False).mean()
    out["macd_hist"] = out["macd"] - out["macd_signal"]
    lv = np.log1p(prices["volume"])
    out["volume_z_20"] = (lv - lv.rolling(20).mean()) / lv.rolling(20).std()
    out["day_of_week"] = pd.Series(prices.index.day_of_week, index=prices.index).astype(float)
    return pd.DataFrame(out)[FEATURE_COLUMNS]


def test_numpy_features_equal_the_pandas_formulation(prices):
    ours = build_features(prices, "AAPL", dropna=False)[FEATURE_COLUMNS].iloc[WARMUP_DAYS:]
    reference = _pandas_reference(prices).iloc[WARMUP_DAYS:]
    pd.testing.assert_frame_equal(ours, reference, rtol=1e-9, atol=1e-12, check_freq=False)
