"""The A/B Tests page through AppTest: the demo tests listed, a test created through the form, then stopped."""
from __future__ import annotations

import numpy as np
from streamlit.testing.v1 import AppTest

from conftest import page_app

PAGE = "pages/4_AB_Tests.py"


def _listed_names(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["name"])


def test_page_shows_demo_tests_and_decision(registry_copy):
    at = page_app(PAGE).run()
    assert not at.exception
    names = _listed_names(at)
    assert any("(50/50)" in n for n in names) and any("(shadow)" in n for n in names)
    labels = [m.label for m in at.metric]
    assert labels == ["Status", "Winner", "Improvement (observed)", "Sample ratio"]
    assert any("Decision rule in force" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 4
    assert at.button(key="ab_stop")  # the running test offers stop
    table = at.dataframe[2].value
    assert {"always-valid p", "t-test p (look once)", "always-valid interval"} <= set(table.columns)
    rendered = " ".join(table.astype(str).to_numpy().ravel())
    assert "inf" not in rendered.lower() and "nan" not in rendered.lower()  # "not enough data" instead
    improvement = next(m for m in at.metric if m.label == "Improvement (observed)")
    assert "nan" not in improvement.value and " lower than arm " in improvement.help or "not enough data" in improvement.value
    winner = next(m for m in at.metric if m.label == "Winner")
    assert (improvement.delta == "not significant: may be chance") == (winner.delta == "not significant")
    ratio = next(m for m in at.metric if m.label == "Sample ratio")
    from core.abtest import get_experiment

    shadow = bool(get_experiment(int(at.selectbox(key="ab_test").value))["shadow"])
    assert (ratio.value == "n/a") == shadow  # a shadow test has no split to check
    from core.abtest import list_experiments

    shadow_id = int(list_experiments().query("shadow == 1")["id"].iloc[0])
    at.selectbox(key="ab_test").set_value(shadow_id).run()
    assert not at.exception and next(m for m in at.metric if m.label == "Sample ratio").value == "n/a"
    assert at.query_params["test"] == str(at.selectbox(key="ab_test").value)  # the URL names the test shown


def test_create_through_form_then_stop(registry_copy):
    at = page_app(PAGE).run()
    at.selectbox(key="ab_symbol").set_value("MSFT").run()
    at.text_input(key="ab_name").input("MSFT rf vs xgb")
    at.slider(key="ab_share_0").set_value(70)
    at.slider(key="ab_share_1").set_value(20)
    submit = next(b for b in at.button if b.label == "Create test")
    submit.click().run()
    assert not at.exception
    assert any("sum to 100" in e.value for e in at.error)  # 70 + 20 is refused
    assert "MSFT rf vs xgb" not in _listed_names(at)

    at.slider(key="ab_share_1").set_value(30)
    next(b for b in at.button if b.label == "Create test").click().run()
    assert not at.exception and not at.error
    assert "MSFT rf vs xgb" in _listed_names(at)
    assert any("started on MSFT" in s.value for s in at.success)
    assert at.metric[0].value == "running"

    stop = at.button(key="ab_stop")
    assert stop.label == "Stop test" and stop.proto.type == "secondary"  # no winner: nothing to deploy
    reasons = [c.value.replace("\\", "") for c in at.caption]  # escaped markdown: "No winner\\: ..."
    assert any(r.startswith("No winner: Keep collecting") and "deploys nothing" in r for r in reasons)
    stop.click().run()
    assert any("Confirm: stop **MSFT rf vs xgb** and deploy nothing?" in m.value for m in at.markdown)
    at.button(key="ab_confirm").click().run()
    assert not at.exception
    assert any("Stopped" in s.value for s in at.success)
    row = list(registry_copy.query("SELECT status, winner FROM experiments WHERE name = 'MSFT rf vs xgb'"))[0]
    assert row["status"] == "stopped" and row["winner"] is None  # no data yet: nothing to deploy
    assert list(registry_copy.query("SELECT 1 FROM audit_log WHERE action = 'stop_experiment' AND actor = 'ui'"))


def _count(db) -> int:
    return db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]


def test_replay_form_offers_the_allowed_days_and_refuses_others(registry_copy):
    """The form opens on this test's replayable days; a day inside the arms' training window is refused
    with the first allowed day; replaying the same days twice logs them once."""
    from datetime import date

    from core.abtest import create_experiment
    from core.registry import deployed_model, list_models
    from core.text import escape_markdown

    champion = deployed_model("MSFT")["model_id"]
    other = next(m["model_id"] for m in list_models("MSFT") if m["model_id"] != champion)
    experiment_id = create_experiment("MSFT early", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-01-03", duration_days=90)
    at = page_app(PAGE).run()
    assert at.selectbox(key="ab_test").value == experiment_id
    start, end = at.date_input(key=f"ab_replay_start_{experiment_id}"), at.date_input(key=f"ab_replay_end_{experiment_id}")
    assert (start.value, end.value) == (date(2012, 2, 28), date(2012, 4, 1))  # from the arms' training end to the test's end
    before = _count(registry_copy)

    start.set_value(date(2012, 1, 10))
    next(b for b in at.button if b.label == "Replay").click().run()
    assert not at.exception
    assert any(escape_markdown("first allowed day is 2012-02-28") in e.value for e in at.error)
    assert _count(registry_copy) == before

    at.date_input(key=f"ab_replay_start_{experiment_id}").set_value(date(2012, 2, 28))
    at.date_input(key=f"ab_replay_end_{experiment_id}").set_value(date(2012, 3, 5))
    for new_days in (5, 0):  # the second replay of the same days finds them logged and says so
        next(b for b in at.button if b.label == "Replay").click().run()
        assert not at.exception and not at.error
        assert any(f"{new_days} new trading days logged" in s.value for s in at.success)
        assert _count(registry_copy) == before + 5


def test_a_name_with_markup_created_through_the_form_is_shown_literally(registry_copy):
    from core.text import escape_markdown

    evil = "[click](http://evil.example) <img src=x onerror=alert(1)> **bold**"
    at = page_app(PAGE).run()
    at.selectbox(key="ab_symbol").set_value("MSFT").run()
    at.text_input(key="ab_name").input(evil)
    next(b for b in at.button if b.label == "Create test").click().run()
    assert not at.exception and not at.error
    message = next(s.value for s in at.success if "started on MSFT" in s.value)
    assert escape_markdown(evil) in message and evil not in message
    assert any(s.value.endswith(escape_markdown(evil)) for s in at.subheader)
    assert evil in _listed_names(at)


def test_the_form_defaults_to_a_start_that_can_collect_and_labels_an_aa_test(registry_copy):
    """The start date defaults to the first day every arm can be scored on, not the data's last day; a
    start on the last day of bundled data is refused; the same model in two arms is called an A/A test."""
    from datetime import date

    from core.market import last_trading_day
    from core.registry import deployed_model

    at = page_app(PAGE).run()
    at.selectbox(key="ab_symbol").set_value("MSFT").run()
    champion = deployed_model("MSFT")["model_id"]
    models = [at.selectbox(key="ab_model_0").value, at.selectbox(key="ab_model_1").value]
    start = next(d for d in at.date_input if d.key.startswith("ab_start_"))
    assert start.value < last_trading_day("MSFT").date() and start.value >= date(2012, 2, 28)
    assert not any("A/A test" in i.value for i in at.info)
    at.selectbox(key="ab_model_1").set_value(champion).run()
    at.selectbox(key="ab_model_0").set_value(champion).run()
    assert any("A/A test" in i.value for i in at.info)
    assert models[0] != models[1]

    start = next(d for d in at.date_input if d.key.startswith("ab_start_"))
    start.set_value(last_trading_day("MSFT").date())
    at.text_input(key="ab_name").input("too late")
    next(b for b in at.button if b.label == "Create test").click().run()
    assert not at.exception
    assert any("can never collect data" in e.value for e in at.error)
    assert not list(registry_copy.query("SELECT 1 FROM experiments WHERE name = 'too late'"))


def test_a_deep_link_opens_its_test(registry_copy):
    from core.abtest import list_experiments

    first = int(list_experiments()["id"].min())
    at = page_app(PAGE)
    at.query_params["test"] = str(first)
    at.run()
    assert not at.exception and at.selectbox(key="ab_test").value == first


def test_switching_tests_resets_the_replay_dates(registry_copy):
    """The replay form's dates come from the selected test every time the selection changes."""
    from datetime import date

    from core.abtest import create_experiment, list_experiments, get_experiment
    from core.ab_replay import replay_bounds
    from core.registry import deployed_model, list_models

    champion = deployed_model("MSFT")["model_id"]
    other = next(m["model_id"] for m in list_models("MSFT") if m["model_id"] != champion)
    msft = create_experiment("MSFT later", "MSFT", [(champion, 0.5), (other, 0.5)], "2012-09-04", duration_days=60)
    aapl = int(list_experiments(symbol="AAPL", status="running")["id"].iloc[0])
    at = page_app(PAGE).run()
    at.selectbox(key="ab_test").set_value(aapl).run()
    at.date_input(key=f"ab_replay_start_{aapl}").set_value(date(2012, 7, 2))
    at.selectbox(key="ab_test").set_value(msft).run()
    assert not at.exception
    expected = tuple(date.fromisoformat(d) for d in replay_bounds(get_experiment(msft)))
    assert (at.date_input(key=f"ab_replay_start_{msft}").value, at.date_input(key=f"ab_replay_end_{msft}").value) == expected
    at.selectbox(key="ab_test").set_value(aapl).run()
    expected = tuple(date.fromisoformat(d) for d in replay_bounds(get_experiment(aapl)))
    assert (at.date_input(key=f"ab_replay_start_{aapl}").value, at.date_input(key=f"ab_replay_end_{aapl}").value) == expected


def test_a_winner_is_deployed_through_the_registry_gate(registry_copy):
    """A test whose challenger arm clearly wins offers "Stop and deploy winner" (primary); an uncertified winner
    needs the override, then the registry deploys it and audits the deploy."""
    from core import abtest
    from core.market import load_prices
    from core.registry import deployed_model, get_model, list_models

    champion = deployed_model("MSFT")["model_id"]
    challenger = next(m["model_id"] for m in list_models("MSFT") if m["model_id"] != champion and m["model_type"] != "naive")
    start = max(get_model(champion)["train_end"], get_model(challenger)["train_end"])
    closes = load_prices("MSFT", start=start)["close"]
    test_id = abtest.create_experiment("MSFT clear winner", "MSFT", [(champion, 0.5), (challenger, 0.5)], start,
                                       duration_days=90, min_samples=10)
    rng = np.random.default_rng(0)
    for day, last, actual in zip(closes.index[:40], closes.iloc[:40], closes.iloc[1:41]):
        for model_id, error in ((champion, 2.0), (challenger, 0.05)):
            abtest.record_prediction(test_id, model_id, actual + error + rng.normal(0, 0.01), day, last_close=last,
                                     actual_close=actual)
    at = page_app(PAGE)
    at.query_params["test"] = str(test_id)
    at = at.run()
    assert not at.exception
    stop = at.button(key="ab_stop")
    assert stop.label == "Stop and deploy winner" and stop.proto.type == "primary"
    assert any(f"({challenger}) wins" in c.value.replace("\\", "") and "registry" in c.value for c in at.caption)
    stop.click().run()
    assert any("and deploy arm B" in m.value for m in at.markdown)
    at.button(key="ab_confirm").click().run()
    if not get_model(challenger)["certified"]:  # the registry's gate: an uncertified winner needs the override
        assert any("override" in e.value for e in at.error) and deployed_model("MSFT")["model_id"] == champion
        at.checkbox(key="ab_override").check().run()
        at.button(key="ab_confirm").click().run()
    assert not at.exception
    assert deployed_model("MSFT")["model_id"] == challenger
    assert list(registry_copy.query("SELECT 1 FROM audit_log WHERE action = 'deploy' AND target = ?", [challenger]))
