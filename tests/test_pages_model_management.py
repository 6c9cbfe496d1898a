"""Model Management through AppTest: the registry table, detail, deploy and rollback with confirmation."""
import pytest
from conftest import page_app

from core import registry
from core.text import escape_markdown


@pytest.fixture(autouse=True)
def direct_deploy(monkeypatch):
    """These tests cover a retrain that deploys right after its gate (MLSA_CHALLENGER_AB_TEST=0); the
    challenger stage's shadow A/B test is tests/test_challenger.py's."""
    monkeypatch.setenv("MLSA_CHALLENGER_AB_TEST", "0")


PAGE = "pages/2_Model_Management.py"


def test_registry_table_and_detail(demo_registry, registry_copy):
    at = page_app(PAGE).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"model_id", "status", "type", "version", "skill", "MAE $"} <= set(table.columns)
    assert set(demo_registry.values()) <= set(table["model_id"])
    assert (table["status"] == "deployed").sum() == len(demo_registry)
    assert any(m.label == "Skill vs naive" for m in at.metric)


def test_deploy_then_rollback_with_confirmation(demo_registry, registry_copy):
    champion = demo_registry["MSFT"]
    other = next(m["model_id"] for m in registry.list_models("MSFT") if m["model_id"] != champion and m["status"] != "deployed")
    at = page_app(PAGE).run()
    at.selectbox(key="mm_symbol").set_value("MSFT").run()
    at.selectbox(key="mm_model").set_value(other).run()
    at.button(key="mm_deploy").click().run()
    assert not at.exception
    assert registry.deployed_model("MSFT")["model_id"] == champion  # nothing happens before confirmation
    assert any("Confirm: deploy" in md.value for md in at.markdown)
    at.button(key="mm_confirm").click().run()
    assert registry.deployed_model("MSFT")["model_id"] == champion  # uncertified: refused without override
    assert any("not certified" in e.value for e in at.error)
    at.button(key="mm_deploy").click().run()
    at.checkbox(key="mm_override").check()
    at.text_input(key="mm_override_reason").input("AppTest: deploy an uncertified model on purpose")
    at.button(key="mm_confirm").click().run()
    assert not at.exception
    assert registry.deployed_model("MSFT")["model_id"] == other
    assert any(escape_markdown(f"Deployed {other}") in s.value for s in at.success)  # shown literally

    at.button(key="mm_rollback").click().run()
    at.button(key="mm_confirm").click().run()
    assert not at.exception
    assert registry.deployed_model("MSFT")["model_id"] == champion
    assert registry.get_model(other)["status"] == "rolled_back"


def test_cancel_leaves_everything_as_it_was(demo_registry, registry_copy):
    champion = demo_registry["AAPL"]
    other = next(m["model_id"] for m in registry.list_models("AAPL") if m["model_id"] != champion and m["model_type"] != "naive")
    registry.deploy(other, actor="test", reason="test: give AAPL something to roll back to", override=True)
    at = page_app(PAGE).run()
    at.selectbox(key="mm_symbol").set_value("AAPL").run()
    at.button(key="mm_rollback").click().run()  # the confirmation panel opens ...
    at.button(key="mm_cancel").click().run()  # ... and Cancel closes it with nothing done
    assert not at.exception
    assert registry.deployed_model("AAPL")["model_id"] == other


def test_roll_back_is_disabled_with_nothing_to_go_back_to_and_deep_links_select_the_model(demo_registry, registry_copy):
    """A ticker deployed once has no earlier version: the button says so instead of failing on click.
    ?model=<id> (Forecast's "Open Model Management", Drift's "Retrain Now") opens on that model."""
    champion = demo_registry["MSFT"]
    other = next(m["model_id"] for m in registry.list_models("MSFT") if m["model_id"] != champion)
    assert registry.rollback_candidate("MSFT") is None
    at = page_app(PAGE)
    at.query_params["model"] = other
    at = at.run()
    assert not at.exception
    assert at.selectbox(key="mm_symbol").value == "MSFT" and at.selectbox(key="mm_model").value == other
    assert at.button(key="mm_rollback").disabled
    assert "no earlier deployed version" in at.button(key="mm_rollback").help
    # ?ticker=<symbol> (Home's links) opens on that ticker's deployed price model; an unknown one on All
    by_ticker = page_app(PAGE)
    by_ticker.query_params["ticker"] = "msft"
    by_ticker = by_ticker.run()
    assert not by_ticker.exception
    assert by_ticker.selectbox(key="mm_symbol").value == "MSFT" and by_ticker.selectbox(key="mm_model").value == champion
    unknown = page_app(PAGE)
    unknown.query_params["ticker"] = "NOPE"
    unknown = unknown.run()
    assert not unknown.exception and unknown.selectbox(key="mm_symbol").value == "All"


def test_an_interrupted_approval_shows_as_interrupted_with_a_retry(demo_registry, registry_copy, monkeypatch):
    """A job whose process died (a real, finished process) is shown interrupted on load; Retry runs it."""
    import socket
    import subprocess
    import sys

    from test_faults_lifecycle import _stub_training_here

    from core.retrain_jobs import create_job, get_job
    from core.store import transaction

    champion = demo_registry["MSFT"]
    day = registry_copy.execute("SELECT MAX(as_of) FROM predictions WHERE symbol = 'MSFT'").fetchone()[0]
    job_id = create_job(registry_copy, champion, "drift", "awaiting_approval", "critical drift: waiting for approval",
                         {"as_of": day, "reason": "critical drift", "severity": "critical"}, finished=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with transaction(registry_copy):  # approved by a process that has since ended
        registry_copy["retrain_jobs"].update(job_id, {
            "status": "running", "owner_pid": int(dead.stdout), "owner_host": socket.gethostname(),
            "details_json": '{"as_of": "%s", "approved_by": "reviewer"}' % day})
    at = page_app(PAGE).run()
    assert not at.exception
    assert any(f"Retrain job {job_id}" in w.value and "interrupted" in w.value for w in at.warning)
    assert get_job(job_id)["status"] == "interrupted"
    queue = next(d.value for d in at.dataframe if "trigger" in d.value.columns and job_id in d.value["id"].tolist())
    assert queue.loc[queue["id"] == job_id, "status"].tolist() == ["interrupted"]  # not "running"
    _stub_training_here(monkeypatch)
    at.button(key=f"mm_retry_{job_id}").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(f"Job {job_id}: deployed" in s.value for s in at.success)
    assert get_job(job_id)["status"] == "validating"


def test_the_model_card_follows_a_deploy_and_a_rollback(demo_registry, registry_copy):
    """The card states the model's status: after a deploy from Model Management both cards are rewritten."""
    from core import lifecycle
    from core.explain import artifact_files

    champion = demo_registry["MSFT"]
    other = next(m["model_id"] for m in registry.list_models("MSFT") if m["model_id"] != champion and m["model_type"] != "naive")
    pending = {"action": "deploy", "model_id": other}
    lifecycle.pending_action(pending)
    lifecycle.confirm_action(pending, override=True, override_reason="test: card follows", actor="test")
    assert "status **deployed**" in artifact_files(other)["model_card"].read_text()
    assert "status **archived**" in artifact_files(champion)["model_card"].read_text()
    pending = {"action": "rollback", "symbol": "MSFT"}
    lifecycle.pending_action(pending)
    lifecycle.confirm_action(pending, actor="test")
    assert "status **deployed**" in artifact_files(champion)["model_card"].read_text()
    assert "status **rolled_back**" in artifact_files(other)["model_card"].read_text()
