"""docs/RUNBOOK.md covers what the code can show: every alert kind, retrain job state and drift severity has
an entry (a heading), and every section a page points to exists. The kinds and states are read from the
source with `ast` (string literals and module-level string constants passed to the functions that raise
alerts and record jobs), so a new kind without a runbook entry fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from core import runbook

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [*sorted((ROOT / "core").glob("*.py")), ROOT / "scheduled_tasks.py"]
# function name -> (position, keyword) of the argument that names an alert kind or a job state
ALERT_KIND_ARGS = {"raise_alert": (1, "kind"), "Condition": (0, "kind")}
JOB_STATE_ARGS = {"create_job": (3, "status"), "update_job": (2, "status"), "_close_job": (2, "status")}


def _constants(trees: dict[Path, ast.Module]) -> dict[str, str]:
    """Module-level `NAME = "text"` of every source (ARM_BROKEN_ALERT = "experiment_arm_broken")."""
    found = {}
    for tree in trees.values():
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                found.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return found


def literal_arguments(sources: dict[str, str], functions: dict[str, tuple[int, str]]) -> dict[str, list[str]]:
    """value -> ["file:line", ...] for every call of `functions` whose argument is a string literal or a module
    constant. Arguments computed at run time (`condition.kind`) are skipped: their values are literals elsewhere."""
    trees = {name: ast.parse(text) for name, text in sources.items()}
    constants = _constants(trees)
    found: dict[str, list[str]] = {}
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if func not in functions:
                continue
            position, keyword = functions[func]
            arg = node.args[position] if len(node.args) > position else next(
                (k.value for k in node.keywords if k.arg == keyword), None)
            value = arg.value if isinstance(arg, ast.Constant) else constants.get(arg.id) if isinstance(arg, ast.Name) else None
            if isinstance(value, str):
                found.setdefault(value, []).append(f"{name}:{node.lineno}")
    return found


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in SOURCES}


def test_the_extractor_finds_literals_constants_and_keywords():
    code = ('KIND = "from_constant"\n'
            'raise_alert(m, "literal_kind", "info", "x", day)\n'
            'alerts.raise_alert(m, KIND, "info", "x", day)\n'
            'Condition(kind="keyword_kind", severity="info", message="x")\n'
            'raise_alert(m, condition.kind, "info", "x", day)\n')
    assert set(literal_arguments({"x.py": code}, ALERT_KIND_ARGS)) == {"from_constant", "literal_kind", "keyword_kind"}


def test_every_alert_kind_has_a_runbook_entry(sources):
    kinds = literal_arguments(sources, ALERT_KIND_ARGS)
    assert {"accuracy_drop", "drift", "rollback", "experiment_arm_broken"} <= set(kinds)  # the extractor sees the code
    missing = {kind: where for kind, where in kinds.items() if kind not in runbook.headings()}
    assert not missing, f"alert kinds without a heading in docs/RUNBOOK.md: {missing}"


def test_every_retrain_job_state_has_a_runbook_entry(sources):
    states = literal_arguments(sources, JOB_STATE_ARGS)
    assert {"running", "rejected", "awaiting_approval", "interrupted"} <= set(states)
    missing = {state: where for state, where in states.items() if state not in runbook.headings()}
    assert not missing, f"retrain job states without a heading in docs/RUNBOOK.md: {missing}"


def test_every_drift_severity_has_a_runbook_entry():
    from core.drift_report import SEVERITIES

    assert set(SEVERITIES) <= set(runbook.headings())


def test_every_section_the_pages_name_exists_and_the_pages_name_them(sources):
    assert set(runbook.SECTIONS.values()) <= set(runbook.headings())
    caption = runbook.runbook_caption("alerts", "What each alert means")
    assert "docs/RUNBOOK.md" in caption and "**Alerts**" in caption
    with pytest.raises(KeyError):
        runbook.runbook_caption("no such section", "x")
    assert runbook.headings("# Title\ntext\n## `drift`\nmore\n") == ["Title", "drift"]


def test_a_section_is_the_text_under_its_heading_up_to_the_next_of_its_level():
    text = "# Runbook\nintro\n## Alerts\nall alerts\n### `drift`\nthe drift alert\n## Troubleshooting\nfix it\n"
    assert runbook.section("alerts", text) == "all alerts\n#### `drift`\nthe drift alert"  # sub-entries one level down
    assert runbook.section("troubleshooting", text) == "fix it"
    with pytest.raises(KeyError):
        runbook.section("retrain", text)  # a heading the text lacks
    shipped = runbook.section("retrain")  # the real file: every job state is in its section, the next section is not
    assert "#### `testing`" in shipped and "#### `interrupted`" in shipped and "Model health" not in shipped
    assert runbook.section("loop").startswith("Home shows one per ticker") and "#### challenger in test" in runbook.section("loop")


def runbook_expanders(at, section: str) -> list[str]:
    """The markdown inside the page's runbook expander(s) for `section` (the section's own text, not a pointer)."""
    bodies = ["\n".join(m.value for m in e.markdown) for e in at.expander if e.label == runbook.expander_label(section)]
    return [body for body in bodies if body == runbook.section(section)]


def test_the_pages_show_the_runbook_section_where_the_states_appear(registry_copy):
    """Home (loop states), Model Management (job states, certification, timeline), Drift (after a check), A/B
    Tests and Forecast (offline data source) each hold the runbook section for what they show in an
    expander: readable in the app, which serves no static files. Monitoring's are in test_health_view."""
    from conftest import page_app

    home = page_app("Home.py").run()
    assert not home.exception and runbook_expanders(home, "loop")
    management = page_app("pages/2_Model_Management.py").run()
    assert not management.exception
    assert runbook_expanders(management, "retrain") and runbook_expanders(management, "loop")
    assert runbook_expanders(management, "certification")  # the demo's deployed model was certified
    drift = page_app("pages/3_Drift.py").run()
    drift.button[0].click().run()  # Check for Drift
    assert not drift.exception and runbook_expanders(drift, "drift")
    ab = page_app("pages/4_AB_Tests.py").run()
    assert not ab.exception and runbook_expanders(ab, "ab")
    forecast = page_app("pages/1_Forecast.py").run()  # offline: the bundled data or its cache, never yfinance
    assert not forecast.exception and runbook_expanders(forecast, "troubleshooting")


def test_the_ab_form_opens_on_the_default_duration_setting(registry_copy, monkeypatch):
    from conftest import page_app

    monkeypatch.delenv("MLSA_AB_DEFAULT_DURATION_DAYS", raising=False)
    monkeypatch.setenv("AB_DEFAULT_DURATION_DAYS", "45")
    at = page_app("pages/4_AB_Tests.py").run()
    assert not at.exception and at.number_input(key="ab_duration").value == 45
