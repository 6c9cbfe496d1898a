"""Hostile inputs to the statistics and to stored user text (issue 10 §3: "statistics on degenerate columns",
"user text is text"): a clear error naming the argument or column and the fix, never a bare ValueError."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from core import drift_kernels, drift_stats
from core.drift_kernels import DriftInputError

NUMBERS = np.arange(20.0)


@pytest.mark.parametrize("kernel", [drift_kernels.psi, drift_kernels.ks_test, drift_kernels.wasserstein])
@pytest.mark.parametrize("reference, current, expected", [
    (["a"] * 20, NUMBERS, r"^reference holds values that are not numbers \(e\.g\. 'a'\): convert them with pd\.to_numeric"),
    (NUMBERS, [*range(19), "x"], r"^current holds values that are not numbers \(e\.g\. 'x'\)"),
    (NUMBERS, pd.Series(["1.5"] * 19 + ["n/a"]), r"^current holds values that are not numbers \(e\.g\. 'n/a'\)"),
    (pd.date_range("2024-01-01", periods=20), NUMBERS, r"^reference holds dates/times: convert to a number \(e\.g\. days "
                                                       r"since start\) or drop it"),
    (NUMBERS, [pd.Timestamp("2024-01-01")] * 20, r"^current holds dates/times"),
    (NUMBERS, [np.inf] * 20, r"^current has 0 finite value\(s\)"),
])
def test_one_column_kernels_refuse_what_is_not_a_number_naming_the_argument(kernel, reference, current, expected):
    with pytest.raises(DriftInputError, match=expected):
        kernel(reference, current)


def test_the_kernels_still_take_numbers_given_as_lists_series_and_numeric_strings():
    assert drift_kernels.psi(list(NUMBERS), pd.Series(NUMBERS)) == pytest.approx(0.0)
    assert drift_kernels.ks_test(NUMBERS.astype(str), NUMBERS)[0] == 0.0  # "1.0" parses, as before


@pytest.mark.parametrize("column", [
    pd.Series(pd.date_range("2024-01-01", periods=20)),  # datetime64
    pd.Series(pd.date_range("2024-01-01", periods=20, tz="UTC")),  # tz-aware
    pd.Series([pd.Timestamp("2024-01-01").date()] * 20),  # python dates in an object column
    pd.Series(pd.to_timedelta(np.arange(20), unit="D")),  # time spans
])
def test_a_date_column_is_named_as_dates_not_text(column):
    frame = pd.DataFrame({"when": column, "x": NUMBERS})
    with pytest.raises(DriftInputError, match=r"^column 'when' holds dates/times \(.*\): convert to a number \(e\.g\. "
                                              r"days since start\) or drop it\.$"):
        drift_stats.compare_frames(frame, frame)


def test_an_all_infinite_reference_column_says_infinite_not_only_missing():
    reference = pd.DataFrame({"a": [np.inf, -np.inf] * 10, "b": NUMBERS})
    with pytest.raises(DriftInputError, match=r"column 'a' has no finite value in the reference \(all missing or infinite\)"):
        drift_stats.compare_frames(reference, reference.assign(a=NUMBERS))


def test_booleans_are_still_numbers():
    frame = pd.DataFrame({"flag": [True, False] * 10})
    assert len(drift_stats.compare_frames(frame, frame).features) == 1


# --- experiment names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, code", [
    ("ab\x00test", "U+0000"), ("line\nbreak", "U+000A"), ("esc\x1b[31mred", "U+001B"), ("del\x7f", "U+007F"),
    ("invoice\u202egnp.exe", "U+202E"),  # shown as "invoiceexe.png"
    *((f"name {chr(c)}x", f"U+{c:04X}") for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]),
])
def test_an_experiment_name_with_control_or_bidi_characters_is_refused(registry_copy, name, code):
    from core.abtest import ExperimentError, create_experiment
    from core.registry import deployed_model, list_models

    champion = deployed_model("MSFT")["model_id"]
    other = next(m["model_id"] for m in list_models("MSFT") if m["model_id"] != champion)
    before = registry_copy["experiments"].count
    with pytest.raises(ExperimentError, match=rf"^The name contains an invisible character \({re.escape(code)}, .*use visible text only"):
        create_experiment(name, "MSFT", [(champion, 0.5), (other, 0.5)], "2012-06-01")
    assert registry_copy["experiments"].count == before
    create_experiment("MSFT ünïcode — ok ✓", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-06-01")  # visible text is fine
