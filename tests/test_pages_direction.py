"""Direction models through the pages: Forecast trains one with its form (with progress) and shows P(up), its
interval of belief, the baselines in words, the reliability diagram and confusion matrix; Model Management lists
both kinds with the metrics that fit each, deploys a classifier beside the price model (certification gate and
override as for any model) and runs its certification; Forecast serves and logs its P(up) once; Monitoring, Drift
and A/B Tests work with it."""
import pandas as pd

from conftest import page_app


def _train_direction(at, estimator: str = "xgb"):
    at.selectbox(key="fc_type").set_value("direction").run()
    assert {s.key for s in at.slider} >= {"fc_dir_trees"} and "fc_xgb_trees" not in {s.key for s in at.slider}
    at.selectbox(key="fc_dir_estimator").set_value(estimator)
    at.slider(key="fc_dir_trees").set_value(20)
    at.number_input(key="fc_window").set_value(400)
    next(b for b in at.button if b.label == "Train and register").click().run()
    assert not at.exception, at.exception
    message = at.success[-1].value
    assert "Registered **direction\\_v" in message and "validation accuracy" in message
    return message.split("**")[1].replace("\\", "")


def test_forecast_trains_a_direction_model_and_shows_p_up(registry_copy):
    from core.registry import get_model, list_models

    before = {m["model_id"] for m in list_models("AAPL", db=registry_copy)}
    logged_before = registry_copy["predictions"].count
    at = page_app("pages/1_Forecast.py").run()
    assert not any(s.value.startswith("Direction:") for s in at.subheader)  # no direction model yet: no section
    model_id = _train_direction(at)
    row = get_model(model_id, db=registry_copy)
    assert row["model_type"] == "direction" and row["params"]["n_estimators"] == 20 and row["status"] == "candidate"
    assert {m["model_id"] for m in list_models("AAPL", db=registry_copy)} - before == {model_id}
    assert any(s.value.startswith("Direction: will AAPL close up or down?") for s in at.subheader)
    labels = [m.label for m in at.metric]
    assert any(label.startswith("P(up) for") for label in labels) and "90% interval of belief" in labels
    p_up = next(m.value for m in at.metric if m.label.startswith("P(up) for"))
    assert 0 < float(p_up.rstrip("%")) < 100
    words = [w.value for w in at.warning] + [s.value for s in at.success]
    assert any("the better baseline" in w for w in words)
    table = next(d.value for d in at.dataframe if "who" in d.value.columns and "Brier" in d.value.columns)
    assert list(table["who"]) == ["model (calibrated)", "model before calibration", "logistic regression",
                                  "always up (majority class of its training days)", "same as today (persistence)"]
    assert table["accuracy"].between(0.3, 0.7).all()
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 3  # prices, reliability diagram, confusion matrix
    assert any('"type":"heatmap"' in c.proto.spec.replace(" ", "") for c in charts)
    assert registry_copy["predictions"].count == logged_before  # viewing P(up) logs nothing


def test_model_management_lists_both_kinds_and_certifies_a_classifier(registry_copy):
    from core.registry import get_model

    at = page_app("pages/1_Forecast.py").run()
    model_id = _train_direction(at, "logit")
    assert get_model(model_id, db=registry_copy)["params"]["estimator"] == "logit"
    mm = page_app("pages/2_Model_Management.py")
    mm.query_params["model"] = model_id
    mm.run()
    assert not mm.exception
    table = mm.dataframe[0].value
    direction_row = table.loc[table["model_id"] == model_id].iloc[0]
    price_rows = table.loc[table["type"] != "direction"]
    assert 30 < direction_row["accuracy %"] < 70 and direction_row["MAE $"] != direction_row["MAE $"]  # NaN: no $ error
    assert price_rows["MAE $"].notna().all() and price_rows["accuracy %"].isna().all()
    labels = [m.label for m in mm.metric]
    assert "Validation accuracy" in labels and "Calibration error (ECE)" in labels
    from core.model_view import model_facts

    facts = model_facts(get_model(model_id, db=registry_copy)).set_index("fact")["value"]
    edges = get_model(model_id, db=registry_copy)["metrics"]["fold_skill"]  # accuracy minus the better baseline's
    assert facts["per-fold accuracy edge over the better baseline"] == ", ".join(f"{100 * e:+.1f} pts" for e in edges)
    assert not mm.button(key="mm_deploy").disabled  # a classifier deploys too (test_deploy_and_serve_...)
    assert get_model(model_id, db=registry_copy)["status"] == "candidate"
    mm.button(key="mm_drift_check").click().run()  # trained up to the last day: no day after it to check yet
    assert not mm.exception and any("after its training window" in e.value for e in mm.error)
    next(b for b in mm.button if b.label == "Run certification").click().run()
    assert not mm.exception
    certification = get_model(model_id, db=registry_copy)["metrics"]["certification"]
    assert [c["key"] for c in certification["checks"]] == ["cv_accuracy_edge", "cv_accuracy_std", "permutation_p",
                                                           "bootstrap_ci_lower", "latency_p95_ms"]
    checklist = next(d.value for d in mm.dataframe if "check" in d.value.columns)
    assert "Label permutation test p-value" in set(checklist["check"])


def test_every_page_opens_with_a_direction_model_in_the_registry(registry_copy):
    from core.direction import train_direction
    from core.registry import register

    from core.ab_view import arm_model_ids

    model_id = register(train_direction("AAPL", "logit", window_days=400), db=registry_copy)
    pickers = {"pages/3_Drift.py": "drift_model", "pages/5_Explainability.py": "ex_model"}
    for page in (None, "pages/1_Forecast.py", "pages/2_Model_Management.py", "pages/3_Drift.py", "pages/4_AB_Tests.py",
                 "pages/5_Explainability.py", "pages/6_Monitoring.py"):
        at = page_app(page)
        at.query_params["ticker"] = "AAPL"
        at.run()
        assert not at.exception, (page, at.exception)
        if page in pickers:  # drift (its P(up) and scoring rules) and explainability list classifiers
            options = at.selectbox(key=pickers[page]).options
            assert any(option.split(" ")[0] == model_id for option in options)  # options may carry a status
    assert model_id in arm_model_ids("AAPL")  # a direction model can be an A/B arm (of a direction test)


def _msft_direction(db, estimator: str = "logit", window_days: int = 400) -> str:
    from core.direction import train_direction
    from core.registry import register

    return register(train_direction("MSFT", estimator, train_end="2012-05-31", window_days=window_days), db=db)


def test_deploy_a_direction_model_on_model_management_then_serve_it_once_on_forecast(registry_copy):
    from core.market import last_trading_day
    from core.registry import deployed_model, get_model

    price = deployed_model("MSFT", db=registry_copy)["model_id"]
    model_id = _msft_direction(registry_copy)
    mm = page_app("pages/2_Model_Management.py")
    mm.query_params["model"] = model_id
    mm.run()
    mm.button(key="mm_deploy").click().run()
    mm.button(key="mm_confirm").click().run()  # uncertified: refused without an override, as for a price model
    assert get_model(model_id, db=registry_copy)["status"] == "candidate" and any("not certified" in e.value for e in mm.error)
    mm.button(key="mm_deploy").click().run()
    mm.checkbox(key="mm_override").check()
    mm.text_input(key="mm_override_reason").input("AppTest: a direction model, uncertified on purpose")
    mm.button(key="mm_confirm").click().run()
    assert not mm.exception
    assert deployed_model("MSFT", db=registry_copy, kind="direction")["model_id"] == model_id
    assert deployed_model("MSFT", db=registry_copy)["model_id"] == price  # deployed beside the price model

    fc = page_app("pages/1_Forecast.py")
    fc.query_params["ticker"] = "MSFT"
    fc.run()
    before = registry_copy["predictions"].count
    assert not fc.exception and registry_copy["predictions"].count == before  # a view logs nothing
    serve = fc.button(key="fc_dir_serve")
    assert serve.label == f"Serve and log P(up) for {last_trading_day('MSFT'):%Y-%m-%d}"
    serve.click().run()
    assert not fc.exception and registry_copy["predictions"].count == before + 1
    assert any(s.value.startswith("Served and logged P\\(up\\)") for s in fc.success)  # shown as escaped text
    row = registry_copy.execute("SELECT model_id, p_up, as_of FROM predictions ORDER BY id DESC LIMIT 1").fetchone()
    assert row[0] == model_id and 0 < row[1] < 1 and row[2] == f"{last_trading_day('MSFT'):%Y-%m-%d}"
    shown = next(m.value for m in fc.metric if m.label.startswith("P(up) for"))
    assert shown == f"{row[1]:.1%}"  # the logged P(up), not a new what-if
    assert "fc_dir_serve" not in {b.key for b in fc.button}  # served: no second button
    fc.run()
    assert registry_copy["predictions"].count == before + 1 and any("Served and logged on" in c.value for c in fc.caption)


def test_monitoring_drift_and_ab_pages_with_a_direction_model(registry_copy):
    from core.market import load_prices
    from core.metrics import upsert_daily_metrics
    from core.predict import backfill_actuals, predict
    from core.registry import deploy

    model_id, other = _msft_direction(registry_copy), _msft_direction(registry_copy, window_days=600)
    deploy(model_id, override=True, reason="AppTest", db=registry_copy)
    days = load_prices("MSFT", start="2012-06-01", end="2012-08-31", db=registry_copy).index
    for day in days:
        predict("MSFT", day, kind="direction")
    backfill_actuals(days[-1], symbol="MSFT")
    upsert_daily_metrics(days[0], days[-1])
    for page in (None, "pages/2_Model_Management.py"):  # Home's $ aggregates stay the price models'
        at = page_app(page)
        at.query_params["model"] = model_id
        at.run()
        assert not at.exception, (page, at.exception)

    mon = page_app("pages/6_Monitoring.py")
    mon.query_params.update({"ticker": "MSFT", "model": model_id})
    mon.run()
    assert not mon.exception
    table = next(d.value for d in mon.dataframe if "who" in d.value.columns)
    assert list(table["who"]) == ["model", "always up", "same as today"] and table["days"].iloc[0] == len(days) - 1
    # "beats" (green) or "is worse than" (amber) only when the daily Brier gap's 95% interval excludes 0, else on par
    said = {kind: [e.value for e in getattr(mon, kind) if "the better baseline" in e.value]
            for kind in ("success", "warning", "info")}
    [(kind, [sentence])] = [(kind, found) for kind, found in said.items() if found]
    assert "daily gap 95% interval" in sentence and "Brier" in sentence
    assert kind == ("success" if " beats " in sentence else "warning" if " is worse than " in sentence else "info")

    drift_page = page_app("pages/3_Drift.py", 120)
    drift_page.query_params["model"] = model_id
    drift_page.run()
    drift_page.date_input(key=f"drift_as_of_{model_id}").set_value(days[-1].date())
    next(b for b in drift_page.button if b.label == "Check for Drift").click().run()
    assert not drift_page.exception and not drift_page.error
    card = next(m for m in drift_page.metric if m.label == "Recent Brier score")
    assert float(card.value) > 0 and "vs validation" in card.delta

    ab = page_app("pages/4_AB_Tests.py")
    ab.run()
    ab.selectbox(key="ab_symbol").set_value("MSFT").run()
    ab.selectbox(key="ab_model_0").set_value(model_id).run()
    ab.selectbox(key="ab_model_1").set_value(other).run()
    ab.text_input(key="ab_name").input("MSFT direction: 400 vs 600 days")
    next(b for b in ab.button if b.label == "Create test").click().run()
    assert not ab.exception and not ab.error
    experiment = pd.read_sql_query("SELECT metric, symbol FROM experiments WHERE name = ?", registry_copy.conn,
                                   params=["MSFT direction: 400 vs 600 days"])
    assert experiment.to_dict("records") == [{"metric": "log_loss", "symbol": "MSFT"}]  # a proper scoring rule
