"""Pointers from the pages into docs/RUNBOOK.md: what an alert, verdict or fault means and what fixes it.

The pages show a one-line caption naming the runbook section that explains the state on screen, and
beside it an expander holding that section's text (`section`): the app has no static folder, so a link
to the file would lead nowhere, while the text itself tells the user what the state means and what to do.
`tests/test_runbook.py` checks every section named here is a heading of the runbook and every alert
kind the code can raise has its entry.
"""
from __future__ import annotations

import re
from pathlib import Path

RUNBOOK_PATH = Path(__file__).resolve().parent.parent / "docs" / "RUNBOOK.md"
RUNBOOK_FILE = "docs/RUNBOOK.md"
SECTIONS = {  # key -> the heading in docs/RUNBOOK.md
    "loop": "Loop states",
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


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", flags=re.MULTILINE)


def section(key: str, text: str | None = None) -> str:
    """The markdown under the heading `SECTIONS[key]` up to the next heading of the same or a higher level
    (its sub-entries included), for the pages' runbook expanders. KeyError for an unknown key or a heading
    missing from the runbook. Sub-headings are shown one level smaller so they sit under the expander's title."""
    heading = SECTIONS[key]
    text = RUNBOOK_PATH.read_text(encoding="utf-8") if text is None else text
    matches = list(_HEADING.finditer(text))
    start = next((m for m in matches if m.group(2).strip().strip("`") == heading), None)
    if start is None:
        raise KeyError(f"{heading!r} is not a heading of {RUNBOOK_FILE}")
    level = len(start.group(1))
    end = next((m.start() for m in matches if m.start() > start.start() and len(m.group(1)) <= level), len(text))
    body = text[start.end():end].strip()
    return re.sub(r"^(#{1,5})(\s)", r"#\1\2", body, flags=re.MULTILINE)


def expander_label(key: str) -> str:
    """The runbook expander's title: the section's heading, so the user knows what opening it shows."""
    return f"📖 Runbook: {SECTIONS[key]}"
