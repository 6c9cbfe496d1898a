"""What a new A/B test may be: its bounds, the checks on its name, arms and start, and the days it may count.

Read-only rules for `core.abtest` (which owns the experiments tables and writes them) and for the A/B
Tests page's defaults: each refusal is an `ExperimentError` that says what to change. Split from
`core.abtest` so the storage reads at one sitting; nothing here writes.
"""
from __future__ import annotations

import string
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import sqlite_utils

from core.ab_stats import ExperimentError
from core.market import load_prices
from core.predict import in_training_window
from core.registry import RegistryError, get_model, load_model, model_kind
from core.store import get_db

METRICS = {"mae": "mean absolute error ($)", "mape": "mean absolute percentage error (%)",
           "log_loss": "log loss of P(up) (direction models)", "brier": "Brier score of P(up) (direction models)"}
# a test compares arms of one kind, on a loss of that kind: $ / % errors of prices, or a proper scoring rule of P(up)
KIND_METRICS = {"price": ("mae", "mape"), "direction": ("log_loss", "brier")}

MAX_ARMS = 6
MAX_NAME_LENGTH = 120
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f" + "".join(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])))
DURATION_DAYS = (1, 365)
MIN_SAMPLES = (2, 100_000)
CONFIDENCE_LEVEL = (0.5, 0.999)  # (exclusive, inclusive]


def iso_day(value) -> str:
    """A date as the 'YYYY-MM-DD' text the experiments and predictions tables store."""
    return f"{pd.Timestamp(value):%Y-%m-%d}"


def as_number(label: str, value) -> float:
    """`value` as a finite float, else a clear ExperimentError (NaN and infinity are not parameters)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExperimentError(f"{label} must be a number, got {value!r}.") from None
    if not np.isfinite(number):
        raise ExperimentError(f"{label} must be a finite number, got {value!r}.")
    return number


def bounded_int(label: str, value, low: int, high: int) -> int:
    number = as_number(label, value)
    if number != int(number) or not low <= number <= high:
        raise ExperimentError(f"{label} must be a whole number from {low} to {high:,}, got {value!r}.")
    return int(number)


def check_start(symbol: str, start, db: sqlite_utils.Database) -> None:
    """Refuse a start date from which the test can never collect a scored prediction.

    A forecast made on day d is scored on the next close. A start after the data's last day never
    sees a close; a start on the last day sees one only if new prices arrive, which bundled
    (offline) data never does.
    """
    prices = load_prices(symbol, db=db)
    last, source = prices.index[-1], str(prices.attrs.get("source", ""))
    day = start_day(start)
    if day > last or (day == last and "bundled" in source):
        raise ExperimentError(
            f"A test starting on {iso_day(day)} can never collect data: {symbol}'s prices end on {iso_day(last)}"
            + (" and bundled data does not grow" if "bundled" in source else "")
            + ". Start it on a day with a following close (before the last data day), e.g. the arms' last training day.")


def default_start(symbol: str, model_ids: Sequence[str], db: sqlite_utils.Database | None = None) -> pd.Timestamp:
    """A start that can collect data: the first day every arm can be scored on (the latest training
    end of `model_ids`), kept before the ticker's last data day."""
    db = db or get_db()
    days = load_prices(symbol, db=db).index
    first = max((pd.Timestamp(get_model(m, db=db)["train_end"]) for m in model_ids), default=days[0])
    return min(first, days[-2] if len(days) > 1 else days[-1])


def is_aa_test(model_ids: Sequence[str]) -> bool:
    """True when some model is in two arms: an A/A test (checks the pipeline; no model can win)."""
    return len(set(model_ids)) < len(model_ids)


def in_sample_days(experiment: Mapping, observations: pd.DataFrame, db: sqlite_utils.Database) -> list[str]:
    """The analysed days on which some arm was still inside its training window (read from the
    registry, not from the analysis' own filter): a result built on them cannot deploy."""
    if observations.empty:
        return []
    latest_end = max(get_model(a["model_id"], db=db)["train_end"] for a in experiment["arms"])
    return sorted({str(d) for d in observations["as_of"] if in_training_window(latest_end, d)})


def start_day(value) -> pd.Timestamp:
    try:
        start = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ExperimentError(f"The start date {value!r} is not a date ({exc}).") from None
    if pd.isna(start):
        raise ExperimentError("Give the experiment a start date.")
    return start.normalize()


def default_metric(model_ids: Sequence[str], db: sqlite_utils.Database | None = None) -> str:
    """The loss a test of these arms is judged on: MAE for price models, log loss (a proper scoring rule of
    P(up), per prediction) for direction models. Mixed arms get the first arm's; `validate_new` refuses them."""
    if not model_ids:
        return "mae"
    try:
        kind = model_kind(get_model(str(model_ids[0]), db=db or get_db())["model_type"])
    except RegistryError:
        return "mae"  # an unknown arm: `validate_new` says so in words
    return KIND_METRICS[kind][0]


def validate_new(name, symbol, arms, confidence_level, metric, db, shadow: bool = False) -> None:
    """Refuse, with a sentence saying what to change, anything the statistics or the storage cannot take."""
    if not name:
        raise ExperimentError("Give the experiment a name.")
    if len(name) > MAX_NAME_LENGTH:
        raise ExperimentError(f"The name is {len(name)} characters long: keep it to {MAX_NAME_LENGTH}.")
    # control characters (NUL, newline, escape...) and bidi overrides/isolates make a name that prints
    # differently from what it is (reversed, hidden, cut in logs): refused, naming the character
    hidden = next((c for c in name if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS), None)
    if hidden is not None:
        what = unicodedata.name(hidden, "a control character")
        raise ExperimentError(f"The name contains an invisible character (U+{ord(hidden):04X}, {what}) at position "
                              f"{name.index(hidden) + 1}: use visible text only, and retype it if it was pasted.")
    if not 2 <= len(arms) <= MAX_ARMS:
        raise ExperimentError(f"An experiment needs 2 to {MAX_ARMS} arms, got {len(arms)}.")
    shares = np.array([as_number(f"The traffic share of arm {string.ascii_uppercase[i]}", share)
                       for i, (_, share) in enumerate(arms)])
    # in a shadow test an arm B, C... may take no traffic: it predicts every request, the control serves them all
    if (shares[:1 if shadow else None] <= 0).any() or (shares < 0).any() or (shares > 1).any():
        raise ExperimentError("Every arm needs a traffic share above 0 and at most 1 (100 %)"
                              + (", except a shadow arm B, C..., which may take 0." if shadow else "."))
    if abs(shares.sum() - 1.0) > 1e-6:
        raise ExperimentError(f"Traffic shares must sum to 100 %, they sum to {shares.sum() * 100:.1f} %.")
    if metric not in METRICS:
        raise ExperimentError(f"Unknown metric {metric!r}: expected one of {', '.join(METRICS)}.")
    low, high = CONFIDENCE_LEVEL
    if not low < confidence_level <= high:
        raise ExperimentError(f"confidence_level must be above {low} and at most {high}, got {confidence_level}.")
    kinds: set[str] = set()
    for letter, (model_id, _) in zip(string.ascii_uppercase, arms):
        try:
            model = get_model(str(model_id), db=db)
        except RegistryError as exc:
            raise ExperimentError(f"Arm {letter}: {exc}") from exc
        if model["symbol"] != symbol:
            raise ExperimentError(f"{model_id} forecasts {model['symbol']}, not {symbol}: all arms need the same ticker.")
        kinds.add(model_kind(model["model_type"]))
    if len(kinds) > 1:
        raise ExperimentError("The arms mix price and direction models: a test compares models of one kind "
                              "(a price forecast and a P(up) have no common loss).")
    if kinds and metric not in KIND_METRICS[next(iter(kinds))]:
        kind = next(iter(kinds))
        raise ExperimentError(f"A test of {kind} models is judged on {' or '.join(KIND_METRICS[kind])}, not {metric}.")
    verify_arms([(letter, str(model_id)) for letter, (model_id, _) in zip(string.ascii_uppercase, arms)], db)


def verify_arms(arms: Sequence[tuple[str, str]], db: sqlite_utils.Database) -> None:
    """Load every arm's model through the registry (sha256 and feature signature checked): an arm that
    cannot serve would only ever fall back to the deployed model, so it is refused up front."""
    for letter, model_id in arms:
        try:
            load_model(model_id, db=db)
        except RegistryError as exc:  # ModelIntegrityError included
            raise ExperimentError(f"Arm {letter} ({model_id}) cannot be used: its artifact does not verify ({exc}).") from exc

