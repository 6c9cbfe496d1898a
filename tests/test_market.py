"""Market data: sources in order, caching, and clear errors for bad input. Never touches the network."""
import numpy as np
import pandas as pd
import pytest

from core import market
from core.market import MarketDataError, available_symbols, load_prices, validate_prices


def test_bundled_symbols_are_available(fresh_db):
    assert {"AAPL", "MSFT", "IBM", "GOOG", "FB", "^GSPC", "^IXIC"} <= set(available_symbols())


def test_offline_first_load_is_bundled_then_cached(fresh_db):
    first = load_prices("AAPL", start="2010-01-01", end="2010-12-31")
    assert first.attrs["source"] == "bundled"
    assert first.index[0] >= pd.Timestamp("2010-01-01") and first.index[-1] <= pd.Timestamp("2010-12-31")
    assert len(first) == 252  # trading days of 2010
    again = load_prices("AAPL", start="2010-01-01", end="2010-12-31")
    assert again.attrs["source"] == "cache:bundled"
    pd.testing.assert_frame_equal(first, again, check_freq=False)
    assert fresh_db["prices"].count == 3270  # the whole bundled history was cached once


def test_yfinance_raising_falls_back_to_bundled(fresh_db, monkeypatch):
    import yfinance

    monkeypatch.setenv("MLSA_OFFLINE", "0")
    calls = []

    def unreachable(*args, **kwargs):
        calls.append(args)
        raise ConnectionError("Could not resolve host: query2.finance.yahoo.com")

    monkeypatch.setattr(yfinance, "download", unreachable)
    frame = load_prices("MSFT")
    assert calls, "yfinance must be tried when offline mode is off"
    assert frame.attrs["source"] == "bundled"


def test_yfinance_empty_frame_falls_back_to_bundled(fresh_db, monkeypatch):
    import yfinance

    monkeypatch.setenv("MLSA_OFFLINE", "0")
    monkeypatch.setattr(yfinance, "download", lambda *a, **k: pd.DataFrame())  # what offline download returns
    assert load_prices("IBM").attrs["source"] == "bundled"


def test_yfinance_answer_is_used_and_cached(fresh_db, monkeypatch):
    import yfinance

    monkeypatch.setenv("MLSA_OFFLINE", "0")
    index = pd.bdate_range("2024-01-02", periods=5, tz="America/New_York")
    columns = pd.MultiIndex.from_product([["Open", "High", "Low", "Close", "Volume"], ["NVDA"]])
    raw = pd.DataFrame(np.array([[10, 11, 9, 10.5, 1e6]] * 5), index=index, columns=columns)
    monkeypatch.setattr(yfinance, "download", lambda *a, **k: raw)
    frame = load_prices("NVDA")
    assert frame.attrs["source"] == "yfinance"
    assert list(frame.index) == list(pd.bdate_range("2024-01-02", periods=5))
    assert load_prices("NVDA").attrs["source"] == "cache:yfinance"
    assert "NVDA" in available_symbols()


def test_offline_mode_never_calls_yfinance(fresh_db, monkeypatch):
    import yfinance

    monkeypatch.setattr(yfinance, "download", lambda *a, **k: pytest.fail("network used in offline mode"))
    assert load_prices("GOOG").attrs["source"] == "bundled"


def test_unknown_ticker_is_a_clear_error(fresh_db):
    with pytest.raises(MarketDataError, match="Unknown ticker 'ZZZZ'"):
        load_prices("zzzz")


def test_empty_range_names_the_coverage(fresh_db):
    with pytest.raises(MarketDataError, match="no trading days between 2020-01-01 and 2020-02-01; data covers 2000-03-01"):
        load_prices("AAPL", start="2020-01-01", end="2020-02-01")
    with pytest.raises(MarketDataError, match="start date 2012-01-01 is after the end date 2011-01-01"):
        load_prices("AAPL", start="2012-01-01", end="2011-01-01")
    with pytest.raises(MarketDataError, match="No ticker"):
        load_prices("  ")


def _ohlcv(closes):
    index = pd.bdate_range("2020-01-01", periods=len(closes))
    closes = np.asarray(closes, dtype=float)
    return pd.DataFrame({"open": closes, "high": closes, "low": closes, "close": closes, "volume": 1e6}, index=index)


@pytest.mark.parametrize("bad, message", [
    ([10, np.nan, 11], "missing or infinite prices \\(first on 2020-01-02\\)"),
    ([10, np.inf, 11], "missing or infinite"),
    ([10, 0.0, 11], "zero or negative prices"),
    ([10, -1.0, 11], "zero or negative prices"),
])
def test_validate_prices_names_the_problem(bad, message):
    with pytest.raises(MarketDataError, match=message):
        validate_prices(_ohlcv(bad), "TEST")


def test_validate_prices_missing_column_and_too_short():
    with pytest.raises(MarketDataError, match="lacks the column\\(s\\) volume"):
        validate_prices(_ohlcv([1, 2]).drop(columns="volume"), "TEST")
    with pytest.raises(MarketDataError, match="at least 5 needed"):
        validate_prices(_ohlcv([1, 2]), "TEST", min_rows=5)


def test_corrupt_rows_in_the_cache_are_refused(fresh_db):
    load_prices("AAPL", end="2000-03-31")
    fresh_db.execute("UPDATE prices SET close = -5 WHERE symbol = 'AAPL' AND date = '2000-03-15'")
    with pytest.raises(MarketDataError, match="zero or negative prices \\(first on 2000-03-15\\)"):
        load_prices("AAPL", end="2000-03-31")


def test_next_trading_day(fresh_db):
    load_prices("AAPL")
    assert market.next_trading_day("AAPL", pd.Timestamp("2012-03-02")) == pd.Timestamp("2012-03-05")
    assert market.next_trading_day("AAPL", pd.Timestamp("2013-03-01")) == pd.Timestamp("2013-03-04")  # past the data
