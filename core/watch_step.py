"""One or more days of the sequential detectors for many models at once: pure (no database), exact.

`core/drift_watch.py` reads the inputs (`core/watch_inputs.py`), calls `advance` and stores what it returns:
per model and day one row per detector with the *compact* daily statistics (leading statistic and its
threshold, the alarm flag, the onset and, on an alarm day only, the alarm's details as JSON), and per
model its detectors' *full* state after its last day, packed as bytes (`pack` / `unpack`), which is all a
restart needs. Turning every state into JSON every day was most of a day's cost (issue 13: ~0.6 s for 1,000
models, ~0.7 s more to parse it back) and of the storage (3.7 KB per model and day); the packed state is
built once, after the last day, and read back for a whole group with one `np.frombuffer`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.drift_report import RANGE
from core.sequential import CusumArray, innovations_many, range_alarms, stack_standardisers

_NAT = np.iinfo(np.int64).min  # "no day", as in core.sequential's vectorised state
SIDES = ("up", "down")


def dumps(value: Any) -> str:
    """The one JSON form of everything stored (sorted keys, no spaces): equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass
class DayInputs:
    """One model's raw inputs for the days to apply, in order: days (n), ret (n), err (n; NaN: no forecast),
    feat / prev (n, feature_scale streams) today and the trading day before, values (n, range features)."""

    days: list[str]
    ret: np.ndarray
    err: np.ndarray
    feat: np.ndarray
    prev: np.ndarray
    values: np.ndarray


@dataclass
class Advanced:
    """What `advance` gives per model: rows (one per detector and day: detector, as_of, statistic, threshold,
    alarm, onset_day, detail = the alarm's JSON on an alarm day, else None) and state (`pack`ed, every detector
    after the model's last day; None when it had no day)."""

    rows: list[dict] = field(default_factory=list)
    state: bytes | None = None


# --- the full state, packed ----------------------------------------------------------------------------

_HEAD = ("n", "alarms", "last_alarm", "last_alarm_day", "day", "alarm_at")  # per model, one int64 each
_BODY = ("stat", "start", "start_day")  # per model, (sides, streams, drifts) each, as int64 words


def _shape(detector: Mapping) -> tuple[int, int, int]:
    return 1 + bool(detector["two_sided"]), len(detector["streams"]), len(detector["drifts"])


def packed_size(profile: Mapping) -> int:
    """Bytes of a model's packed state: per detector, 6 + 3 x sides x streams x drifts int64 words."""
    return 8 * sum(len(_HEAD) + len(_BODY) * int(np.prod(_shape(d))) for d in profile["detectors"].values())


def pack(arrays: Mapping[str, CusumArray]) -> list[bytes]:
    """Each model's full state (every detector, in the profile's order) as bytes: int64 words, the statistics'
    float64 bits among them, so `unpack` restores the very same numbers."""
    parts = []
    for array in arrays.values():
        n_models = len(array.n)
        parts.append(np.stack([np.asarray(getattr(array, key), dtype=np.int64) for key in _HEAD], axis=1))
        parts.append(np.ascontiguousarray(array.stat, dtype=np.float64).reshape(n_models, -1).view(np.int64))
        parts += [np.asarray(getattr(array, key), dtype=np.int64).reshape(n_models, -1) for key in _BODY[1:]]
    return [row.tobytes() for row in np.concatenate(parts, axis=1)]


def unpack(profiles: Sequence[Mapping], blobs: Sequence[bytes]) -> dict[str, CusumArray]:
    """The detectors of N models with the same detectors (thresholds from their profiles), from `pack`'s bytes."""
    words = np.frombuffer(b"".join(blobs), dtype=np.int64).reshape(len(blobs), -1)
    out, offset = {}, 0
    for name, detector in profiles[0]["detectors"].items():
        shape = (len(blobs), *_shape(detector))
        array = CusumArray(np.array([p["detectors"][name]["thresholds"] for p in profiles], dtype=float),
                           detector["drifts"], detector["two_sided"], detector["streams"], name)
        for key in _HEAD:
            setattr(array, key, words[:, offset].copy())
            offset += 1
        size = int(np.prod(shape[1:]))
        array.stat = words[:, offset:offset + size].copy().view(np.float64).reshape(shape)
        array.start = words[:, offset + size:offset + 2 * size].copy().reshape(shape)
        array.start_day = words[:, offset + 2 * size:offset + 3 * size].copy().reshape(shape)
        offset += 3 * size
        out[name] = array
    return out


def fresh_state(profile: Mapping) -> bytes:
    """The packed state of fresh detectors (statistics at zero) for a profile from `fit_profile`."""
    return pack({name: CusumArray(np.array([d["thresholds"]], dtype=float), d["drifts"], d["two_sided"], d["streams"],
                                  name) for name, d in profile["detectors"].items()})[0]


def _alarm(array: CusumArray, g: int) -> dict:
    """Model g's alarm as `Cusum.alarm` has it (the component with the largest S / h among those >= h)."""
    side, f, j = np.unravel_index(int(array.alarm_at[g]), array.stat.shape[1:])
    onset_day = int(array.start_day[g, side, f, j])
    return {"direction": SIDES[side], "stream": array.streams[f], "drift": float(array.drifts[j]),
            "statistic": float(array.stat[g, side, f, j]), "threshold": float(array.thresholds[g, j]),
            "onset": int(array.start[g, side, f, j]),
            "onset_day": None if onset_day == _NAT else str(np.datetime64(onset_day, "D"))}


# --- one day's compact rows ---------------------------------------------------------------------------------

def _day_rows(array: CusumArray, members: Sequence[int], day: str) -> list[tuple[float, float, int, str | None,
                                                                                    str | None]]:
    """(statistic, threshold, alarm, onset_day, detail) of the given models today: on an alarm day the alarm's
    component and its details; else the component nearest its threshold (largest S / h)."""
    flat_stat = array.stat.reshape(len(array.n), -1)
    ratio = (array.stat / array.thresholds[:, None, None, :]).reshape(len(array.n), -1)
    lead = ratio.argmax(axis=1)
    n_drifts = array.stat.shape[-1]
    rows = np.arange(len(array.n))
    statistic = flat_stat[rows, lead].tolist()
    threshold = array.thresholds[rows, lead % n_drifts].tolist()
    today = np.datetime64(day, "D").astype(np.int64)
    alarmed = (array.alarm_at >= 0) & (array.last_alarm_day == today)
    alarms = {g: _alarm(array, g) for g in members if alarmed[g]}
    out = []
    for g in members:
        alarm = alarms.get(g)
        out.append((statistic[g], threshold[g], 0, None, None) if alarm is None else
                   (float(alarm["statistic"]), float(alarm["threshold"]), 1, alarm["onset_day"], dumps(alarm)))
    return out


def _range_row(profile: Mapping, values: np.ndarray, day: str) -> dict:
    limits = profile["range"]
    low, high = np.asarray(limits["low"], dtype=float), np.asarray(limits["high"], dtype=float)
    span = np.maximum((high - low) / 3.0, 1e-300)
    with np.errstate(invalid="ignore"):
        beyond = np.maximum(values - high, low - values) / span + 1.0
    statistic = float(np.nanmax(beyond)) if np.isfinite(beyond).any() else 0.0
    outside = range_alarms(profile, dict(zip(limits["features"], values)), day) if statistic >= 1.0 else []
    return {"detector": RANGE, "as_of": day, "statistic": max(0.0, statistic), "threshold": 1.0,
            "alarm": int(bool(outside)), "onset_day": day if outside else None,
            "detail": dumps({"outside": outside}) if outside else None}


def _signature(profile: Mapping) -> str:
    return dumps([[name, d["streams"], d["drifts"], d["two_sided"]] for name, d in profile["detectors"].items()])


def advance(profiles: Sequence[Mapping], states: Sequence[bytes | None], inputs: Sequence[DayInputs]
            ) -> list[Advanced]:
    """Apply each model's days in order; returns per model its compact rows and its final full state.

    states: per model, its `pack`ed state after its last stored day (None: fresh detectors).
    Models with the same detectors are advanced together: per day one `innovations_many` and one
    `CusumArray.update` per detector; a model without that day gets NaN, which leaves its state as it is,
    so the state after the last day of the group is each model's state after its own last day.
    """
    out = [Advanced() for _ in profiles]
    groups: dict[str, list[int]] = {}
    for i, profile in enumerate(profiles):
        if inputs[i].days:
            groups.setdefault(_signature(profile), []).append(i)
    for members in groups.values():
        group = [profiles[i] for i in members]
        names = list(group[0]["detectors"])
        arrays = unpack(group, [states[i] or fresh_state(profiles[i]) for i in members])
        standardisers = stack_standardisers(group)
        width = inputs[members[0]].feat.shape[1]
        where = [{day: t for t, day in enumerate(inputs[i].days)} for i in members]
        for day in sorted(set().union(*(w.keys() for w in where))):
            ret, err = np.full(len(members), np.nan), np.full(len(members), np.nan)
            feat, prev = np.full((len(members), width), np.nan), np.full((len(members), width), np.nan)
            present = []
            for g, (i, w) in enumerate(zip(members, where)):
                t = w.get(day)
                if t is not None:
                    present.append(g)
                    ret[g], err[g], feat[g], prev[g] = (inputs[i].ret[t], inputs[i].err[t], inputs[i].feat[t],
                                                        inputs[i].prev[t])
            u = innovations_many(group, ret, err, feat, prev, standardisers)
            today = {}
            for name, array in arrays.items():
                array.update(u[name], day=day)
                today[name] = _day_rows(array, present, day)
            for k, g in enumerate(present):
                i = members[g]
                for name in names:
                    statistic, threshold, alarm, onset_day, detail = today[name][k]
                    out[i].rows.append({"detector": name, "as_of": day, "statistic": statistic, "threshold": threshold,
                                        "alarm": alarm, "onset_day": onset_day, "detail": detail})
                out[i].rows.append(_range_row(profiles[i], inputs[i].values[where[g][day]], day))
        for i, state in zip(members, pack(arrays)):
            out[i].state = state
    return out


def compact_detail(detector: str, alarm: int, stored: str | None) -> str | None:
    """A stored row's detail: the alarm's JSON on an alarm day, else None (rows stored before the compact form
    held the detector's full state, from which the alarm is taken)."""
    if not alarm or stored is None:
        return None
    if detector == RANGE or '"stat"' not in stored:
        return stored
    return dumps(json.loads(stored)["alarm"])
