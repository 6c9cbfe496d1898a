"""The US exchange calendar: which weekdays the market is closed, so a forecast never targets a holiday.

The bundled data ends on a day (e.g. ^GSPC on 2018-12-31) whose next business day can be a market
holiday (2019-01-01); the day after the data is then the next NYSE session, not the next weekday.
Rules (NYSE, regular full-day closures): New Year's Day, Martin Luther King Jr. Day (from 1998),
Presidents' Day, Good Friday, Memorial Day, Juneteenth (from 2022), Independence Day, Labor Day,
Thanksgiving and Christmas, each moved to the nearest weekday when it falls on a weekend (a
Saturday New Year's Day is not moved to the Friday before, as on the exchange). One-off closures
(e.g. 2012-10-29/30, hurricane Sandy; national days of mourning) are not rules and are not known here.

>>> next_session("2018-12-31").date(), next_session("2012-04-05").date()
(datetime.date(2019, 1, 2), datetime.date(2012, 4, 9))
"""
from __future__ import annotations

import functools

import pandas as pd
from pandas.tseries.holiday import (AbstractHolidayCalendar, GoodFriday, Holiday, USLaborDay, USMartinLutherKingJr,
                                    USMemorialDay, USPresidentsDay, USThanksgivingDay, nearest_workday,
                                    sunday_to_monday)


class NYSEHolidays(AbstractHolidayCalendar):
    rules = [
        Holiday("New Year's Day", month=1, day=1, observance=sunday_to_monday),
        USMartinLutherKingJr, USPresidentsDay, GoodFriday, USMemorialDay,
        Holiday("Juneteenth", month=6, day=19, start_date="2022-06-19", observance=nearest_workday),
        Holiday("Independence Day", month=7, day=4, observance=nearest_workday),
        USLaborDay, USThanksgivingDay,
        Holiday("Christmas", month=12, day=25, observance=nearest_workday),
    ]


@functools.lru_cache(maxsize=64)
def _holidays(year: int) -> frozenset:
    days = NYSEHolidays().holidays(start=f"{year}-01-01", end=f"{year}-12-31")
    return frozenset(pd.Timestamp(d).normalize() for d in days)


def is_session(day) -> bool:
    """True when the exchange trades on `day` (a weekday that is not a holiday)."""
    day = pd.Timestamp(day).normalize()
    return day.weekday() < 5 and day not in _holidays(day.year)


def next_session(day) -> pd.Timestamp:
    """The first trading session after `day`."""
    candidate = pd.Timestamp(day).normalize() + pd.Timedelta(days=1)
    while not is_session(candidate):
        candidate += pd.Timedelta(days=1)
    return candidate
