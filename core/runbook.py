"""Pointers from the pages into docs/RUNBOOK.md: what an alert, verdict or fault means and what fixes it.

The pages show a one-line caption naming the runbook section that explains the state on screen;
`tests/test_runbook.py` checks every section named here is a heading of the runbook and every alert
kind the code can raise has its entry.
"""
from __future__ import annotations

import re
from pathlib import Path

RUNBOOK_PATH = Path(__file__).resolve().parent.parent / "docs" / "RUNBOOK.md"
RUNBOOK_FILE = "docs/RUNBOOK.md"
SECTIONS = {  # key -> the heading in docs/RUNBOOK.md
    "alerts": "Alerts",
    "drift": "Drift verdicts",
    "certification": "Certification verdicts",
    "ab": "A/B test verdicts",
    "retrain": "Retrain job states",
    "health": "Model health",
    "troubleshooting": "Troubleshooting",
}


def runbook_caption(section: str, what: str) -> str:
    """'📖 <what>: docs/RUNBOOK.md, section "<heading>"' for `st.caption` (KeyError for an unknown section)."""
    return f"📖 {what}: `{RUNBOOK_FILE}`, section **{SECTIONS[section]}**."


def headings(text: str | None = None) -> list[str]:
    """The runbook's headings (any level), without the #s and surrounding backquotes."""
    text = RUNBOOK_PATH.read_text(encoding="utf-8") if text is None else text
    return [m.group(1).strip().strip("`") for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)]
