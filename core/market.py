"""Price history: the SQLite cache first, then yfinance (when it answers), then the bundled real data.

`load_prices` returns a date-indexed OHLCV frame whose `attrs["source"]` says who served it
("cache:bundled", "yfinance", "bundled", ...). All validation of price frames lives in
`validate_prices`, called on every path, so a bad frame never reaches features or training.
"""
from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import get_settings
from core.store import get_db
from core.trading_calendar import next_session

log = logging.getLogger(__name__)

PRICE_COLUMNS = ["open", "high", "low", "close", "adj_close", "volume"]
BUNDLED_FILE = "prices.csv.gz"


class MarketDataError(ValueError):
    """Price data that cannot be used: unknown ticker, empty range, missing or invalid values."""


# --- validation (the one place) --------------------------------------------------------------------

def validate_prices(frame: pd.DataFrame, symbol: str, min_rows: int = 1) -> pd.DataFrame:
    """Check an OHLCV frame and return it sorted; raise MarketDataError naming what is wrong."""
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in frame.columns]
    if missing:
        raise MarketDataError(f"{symbol}: price data lacks the column(s) {', '.join(missing)}.")
    if len(frame) < min_rows:
        raise MarketDataError(f"{symbol}: {len(frame)} trading day(s) of data, at least {min_rows} needed.")
    prices = frame[["open", "high", "low", "close"]].to_numpy(dtype=float)
    bad_nan = ~np.isfinite(prices).all(axis=1)
    if bad_nan.any():
        first = frame.index[bad_nan][0]
        raise MarketDataError(
            f"{symbol}: {int(bad_nan.sum())} row(s) with missing or infinite prices (first on {_day(first)})."
        )
    bad_sign = (prices <= 0).any(axis=1)
    if bad_sign.any():
        first = frame.index[bad_sign][0]
        raise MarketDataError(
            f"{symbol}: {int(bad_sign.sum())} row(s) with zero or negative prices (first on {_day(first)})."
        )
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index()
    if frame.index.has_duplicates:
        raise MarketDataError(f"{symbol}: the data has duplicate trading days.")
    return frame


def _day(value) -> str:
    return pd.Timestamp(value).strftime("%Y-%m-%d")


# --- bundled data -------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _bundled(path: str) -> pd.DataFrame:
    frame = pd.read_csv(path, parse_dates=["date"])
    frame["adj_close"] = frame["close"]  # the bundled OHLC are already on the adjusted scale
    return frame


def bundled_frame() -> pd.DataFrame:
    path = Path(get_settings().data_dir) / BUNDLED_FILE
    if not path.exists():
        raise MarketDataError(f"The bundled price file {path} is missing; restore it from git.")
    return _bundled(str(path))


def cached_symbols(db: sqlite_utils.Database | None = None) -> list[str]:
    """Tickers with rows in the price cache, sorted: one seek per ticker along the (symbol, date) key, skipping
    from each to the next, where SELECT DISTINCT would read every cached day (millions of rows at scale)."""
    db = db or get_db()
    rows = db.execute(
        "WITH RECURSIVE tickers(symbol) AS (SELECT MIN(symbol) FROM prices UNION ALL "
        "SELECT (SELECT MIN(symbol) FROM prices WHERE symbol > t.symbol) FROM tickers t WHERE t.symbol IS NOT NULL) "
        "SELECT symbol FROM tickers WHERE symbol IS NOT NULL").fetchall()
    return [row[0] for row in rows]


def available_symbols() -> list[str]:
    """Tickers the app can serve offline: the bundled ones plus any already cached in the database."""
    return sorted(set(bundled_frame()["symbol"].unique()) | set(cached_symbols()))


def coverage(symbol: str) -> tuple[pd.Timestamp, pd.Timestamp, int] | None:
    """(first day, last day, trading days) of the bundled data for `symbol`, or None."""
    rows = bundled_frame()
    dates = rows.loc[rows["symbol"] == symbol, "date"]
    if dates.empty:
        return None
    return dates.min(), dates.max(), len(dates)


# --- sources ------------------------------------------------------------------------------------------

def _from_cache(db: sqlite_utils.Database, symbol: str, start: str | None, end: str | None) -> pd.DataFrame:
    """Cached rows in [start, end], read with one indexed range query straight into a frame."""
    frame = pd.read_sql_query(
        "SELECT date, open, high, low, close, adj_close, volume, source FROM prices "
        "WHERE symbol = ? AND date >= ? AND date <= ? ORDER BY date",
        db.conn,
        params=[symbol, start or "0000-00-00", end or "9999-99-99"],
    )
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("date")), name="date")
    return frame


def _cached_span(db: sqlite_utils.Database, symbol: str) -> tuple[str, str] | None:
    row = db.execute("SELECT MIN(date), MAX(date) FROM prices WHERE symbol = ?", [symbol]).fetchone()
    return (row[0], row[1]) if row and row[0] else None


def _from_bundle(symbol: str) -> pd.DataFrame:
    rows = bundled_frame()
    picked = rows.loc[rows["symbol"] == symbol, ["date", *PRICE_COLUMNS]].set_index("date").sort_index()
    picked.index.name = "date"
    picked["source"] = "bundled"
    return picked


def _from_yfinance(symbol: str, timeout: float) -> pd.DataFrame:
    """Full daily history from yfinance, or an empty frame when it does not answer.

    Offline, `yf.download` logs a DNS error and returns an empty frame while `Ticker.history`
    raises; both come out here as an empty frame.
    """
    try:
        import yfinance as yf

        raw = yf.download(symbol, period="max", interval="1d", auto_adjust=True, progress=False,
                          timeout=timeout, threads=False)
    except Exception as exc:  # network, parsing, rate limiting: all mean "did not answer"
        log.info("yfinance did not answer for %s: %s", symbol, exc)
        return pd.DataFrame()
    if raw is None or raw.empty:
        log.info("yfinance returned no rows for %s", symbol)
        return pd.DataFrame()
    if isinstance(raw.columns, pd.MultiIndex):
        raw.columns = raw.columns.get_level_values(0)
    frame = raw.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]].copy()
    frame["adj_close"] = frame["close"]
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index).tz_localize(None).normalize(), name="date")
    frame = frame.dropna(subset=["open", "high", "low", "close"])
    frame["source"] = "yfinance"
    return frame[[*PRICE_COLUMNS, "source"]]


def _store(db: sqlite_utils.Database, symbol: str, frame: pd.DataFrame) -> None:
    records = frame.reset_index()
    records["date"] = records["date"].dt.strftime("%Y-%m-%d")
    records["symbol"] = symbol
    db["prices"].upsert_all(records.to_dict("records"), pk=("symbol", "date"))


def load_prices(
    symbol: str,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
    refresh: bool = False,
    db: sqlite_utils.Database | None = None,
    cache: PriceCache | None = None,
) -> pd.DataFrame:
    """Daily OHLCV for `symbol` between `start` and `end` (inclusive), date-indexed.

    Source order: the SQLite cache, yfinance (unless MLSA_OFFLINE=1), the bundled file. Rows from a
    network or bundled read are cached in `prices`. `attrs["source"]` names the source used. With `cache`
    (a `PriceCache` of this pass) the range is sliced from the ticker's history read once.
    """
    if cache is not None and not refresh:
        return cache.load(symbol, start, end)
    symbol = (symbol or "").strip().upper()
    if not symbol:
        raise MarketDataError("No ticker given: pick one of the available symbols.")
    db = db or get_db()
    lo = _day(start) if start is not None else None
    hi = _day(end) if end is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise MarketDataError(f"{symbol}: the start date {lo} is after the end date {hi}.")

    span = None if refresh else _cached_span(db, symbol)
    fetched = span is None
    if fetched:
        span = _fetch_into_cache(db, symbol)
    frame = _from_cache(db, symbol, lo, hi)
    if frame.empty:
        raise MarketDataError(
            f"{symbol}: no trading days between {lo or 'the start'} and {hi or 'the end'}; "
            f"data covers {span[0]} to {span[1]}."
        )
    origin = frame["source"].iloc[-1]
    frame = validate_prices(frame.drop(columns="source"), symbol)
    frame.attrs["source"] = origin if fetched else f"cache:{origin}"
    frame.attrs["symbol"] = symbol
    return frame


class PriceCache:
    """Each ticker's whole price history read once, then served in slices, for one pass such as a daily cycle.

    A cycle asks for the same ticker's prices ~10 times per model (windows, calendars, the last day); at 11,000
    days each read costs ~15-40 ms (issue 16). Made by the caller for one pass and passed down, never global, so
    the next pass reads prices again (a refresh between two passes is seen). A slice is what `load_prices`
    returns for the same range: the same rows, validated, with `attrs` source and symbol, and the same error
    for an empty range. It keeps the `max_tickers` most recently used tickers (memory stays bounded with
    thousands of tickers; a pass that finishes one ticker before the next reads each once)."""

    def __init__(self, db: sqlite_utils.Database | None = None, max_tickers: int = 8):
        self.db = db or get_db()
        self.max_tickers = max_tickers
        self._frames: OrderedDict[str, pd.DataFrame] = OrderedDict()

    def full(self, symbol: str) -> pd.DataFrame:
        """The ticker's whole history (read the first time it is asked for)."""
        symbol = (symbol or "").strip().upper()
        if symbol in self._frames:
            self._frames.move_to_end(symbol)
        else:
            self._frames[symbol] = load_prices(symbol, db=self.db)
            while len(self._frames) > self.max_tickers:
                self._frames.popitem(last=False)
        return self._frames[symbol]

    def load(self, symbol: str, start=None, end=None) -> pd.DataFrame:
        """`load_prices(symbol, start, end)`, sliced from the history read once."""
        frame = self.full(symbol)
        lo = _day(start) if start is not None else None
        hi = _day(end) if end is not None else None
        if lo is not None and hi is not None and lo > hi:
            raise MarketDataError(f"{frame.attrs['symbol']}: the start date {lo} is after the end date {hi}.")
        picked = frame.loc[lo:hi].copy()  # a copy: a caller may add columns to its frame
        if picked.empty:
            raise MarketDataError(
                f"{frame.attrs['symbol']}: no trading days between {lo or 'the start'} and {hi or 'the end'}; "
                f"data covers {_day(frame.index[0])} to {_day(frame.index[-1])}.")
        picked.attrs = dict(frame.attrs)
        return picked


def _fetch_into_cache(db: sqlite_utils.Database, symbol: str) -> tuple[str, str]:
    """yfinance, else the bundled file; store what answered and return its (first, last) day."""
    settings = get_settings()
    full = pd.DataFrame() if settings.offline else _from_yfinance(symbol, settings.yfinance_timeout_s)
    if full.empty:
        full = _from_bundle(symbol)
    if full.empty:
        known = ", ".join(sorted(bundled_frame()["symbol"].unique()))
        where = "offline mode is on (MLSA_OFFLINE=1)" if settings.offline else "yfinance did not answer"
        raise MarketDataError(f"Unknown ticker '{symbol}': it is not in the bundled data ({known}) and {where}.")
    validate_prices(full, symbol)
    _store(db, symbol, full)
    return _day(full.index[0]), _day(full.index[-1])


def last_trading_day(symbol: str, db: sqlite_utils.Database | None = None,
                     cache: PriceCache | None = None) -> pd.Timestamp:
    """The default `as_of`: the last day with a price for `symbol`: the last cached day (one index seek, not the
    whole history: the daily cycle dates 100 tickers with it), or through `load_prices` for a ticker not cached yet.
    Its rows are validated where they are read."""
    if cache is not None:
        return cache.full(symbol).index[-1]
    span = _cached_span(db or get_db(), (symbol or "").strip().upper())
    return pd.Timestamp(span[1]) if span else load_prices(symbol, db=db).index[-1]


def next_trading_day(symbol: str, as_of: pd.Timestamp, db: sqlite_utils.Database | None = None) -> pd.Timestamp:
    """The trading day after `as_of` in the data, or the next exchange session (weekends and US market
    holidays skipped, core.trading_calendar) when the data ends there."""
    db = db or get_db()
    row = db.execute(
        "SELECT MIN(date) FROM prices WHERE symbol = ? AND date > ?", [symbol, _day(as_of)]
    ).fetchone()
    if row and row[0]:
        return pd.Timestamp(row[0])
    return next_session(as_of)


def source_label(source: str) -> str:
    """Human wording for a source tag, for the UI."""
    labels = {
        "bundled": "bundled offline data (data/prices.csv.gz)",
        "yfinance": "yfinance (live download)",
        "cache:bundled": "local cache of the bundled offline data",
        "cache:yfinance": "local cache of a yfinance download",
    }
    return labels.get(source, source or "unknown")
