"""The demo build: failures in worker processes are named, never lost."""
from __future__ import annotations

from core import demo


def test_a_failing_demo_unit_is_named_and_does_not_break_the_build():
    """A worker's exception comes back as a FAILED line (some exceptions cannot cross processes)."""
    def broken(_report):
        raise RuntimeError("disk full while training XYZ")

    result, lines = demo._collect(broken)
    assert result is None and lines == ["  FAILED: RuntimeError: disk full while training XYZ"]
    reported: list[str] = []
    assert demo._relay(["  ok", *lines], reported.append) == 1 and reported[-1].startswith("  FAILED")
