"""Forecast page through AppTest: the forecast, model vs naive, errors for bad tickers, a training run."""
import pandas as pd
import pytest
from conftest import page_app

PAGE = "pages/1_Forecast.py"


def _train_button(at):
    return next(b for b in at.button if b.label == "Train and register")



@pytest.fixture()
def app(registry_copy):
    return page_app(PAGE)


def test_forecast_shows_prediction_interval_and_naive_comparison(app):
    at = app.run()
    assert not at.exception
    labels = [m.label for m in at.metric]
    assert any(label.startswith("Forecast for") for label in labels)
    assert any("interval" in label for label in labels)
    assert "Data source" in at.caption[0].value
    table = at.dataframe[0].value
    assert set(table["who"]) == {"model", "naive"}
    assert set(table["period"]) == {"validation", "live, last 30 days"}
    assert (table["MAE $"] > 0).all()
    verdicts = [w.value for w in at.warning] + [s.value for s in at.success] + [i.value for i in at.info]
    verdict = next(v for v in verdicts if "naive forecast" in v)  # the live skill Home and Monitoring show, in words
    assert "scored days live (skill" in verdict and "95% interval" in verdict
    assert any(words in verdict for words in ("beats the naive", "on par with the naive", "worse than the naive"))


def test_ticker_without_model_and_too_short_history(app):
    at = app.run()
    at.selectbox(key="fc_symbol").set_value("FB").run()
    assert not at.exception
    assert any("No model is deployed for FB" in i.value for i in at.info)
    _train_button(at).click().run()
    assert not at.exception
    assert any("Not enough history to train on FB" in e.value for e in at.error)


def test_training_run_registers_a_candidate(app):
    from core.registry import get_model

    at = app.run()
    at.selectbox(key="fc_type").set_value("xgb").run()
    keys = {s.key for s in at.slider}
    assert "fc_xgb_trees" in keys and not keys & {"fc_rf_trees", "fc_rf_depth"}  # only the chosen type's settings
    at.slider(key="fc_xgb_trees").set_value(50)
    at.number_input(key="fc_window").set_value(400)
    _train_button(at).click().run()
    assert not at.exception
    message = at.success[-1].value
    assert "Registered **xgb\\_v" in message and "as a candidate" in message  # the id is shown escaped, literally
    assert "MAE \\$" in message  # dollars escaped: two of them would render the text between as LaTeX
    model_id = message.split("**")[1].replace("\\", "")
    model = get_model(model_id)
    assert model["status"] == "candidate" and model["params"]["n_estimators"] == 50
    link = at.get("page_link")[-1].proto  # the link to Model Management carries the new model
    assert link.page.endswith("Model_Management") and model_id in link.label and f"model={model_id}" in link.query_string
    from core.registry import archive

    archive(model_id, actor="test")


def test_typed_unknown_ticker_is_a_clear_error(app):
    app.session_state["fc_symbol"] = "zzzz"  # what typing a new option does (AppTest cannot type one)
    at = app.run()
    assert not at.exception
    assert any("Unknown ticker 'ZZZZ'" in e.value for e in at.error)


def test_in_sample_date_is_labelled_and_not_logged(app):
    from datetime import date

    from core.predict import prediction_log

    at = app.run()  # the default range ends on the last day: a live forecast, logged
    before = len(prediction_log("AAPL", served_only=False))
    at.date_input(key="fc_range_AAPL").set_value((date(2011, 1, 3), date(2011, 6, 1))).run()
    assert not at.exception
    assert any("inside the training window" in w.value and "was not logged" in w.value for w in at.warning)
    assert len(prediction_log("AAPL", served_only=False)) == before


def test_refresh_asks_yfinance_again_and_says_what_answered(app, monkeypatch):
    import yfinance

    calls = []
    monkeypatch.setenv("MLSA_OFFLINE", "0")
    monkeypatch.setattr(yfinance, "download", lambda *a, **k: calls.append(a) or pd.DataFrame())  # offline-like answer
    at = app.run()
    at.button(key="fc_refresh").click().run()
    assert not at.exception
    assert calls, "the refresh must try yfinance"
    assert any("AAPL reloaded from bundled offline data" in i.value for i in at.info)


def _count(db) -> int:
    return db.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]


def _set_end(at, end: str):
    from datetime import date

    return at.date_input(key="fc_range_AAPL").set_value((date(2012, 3, 1), pd.Timestamp(end).date())).run()


def test_a_page_view_is_not_a_request(app, registry_copy):
    """Past days are looked up, never served; only the button serves the latest day, once; moving the
    date back and forth, reruns and refreshes leave the prediction count unchanged."""
    from core.predict import logged_forecast

    at = app.run()  # opens on the last data day, 2013-03-01, never served in the demo: a what-if
    before = _count(registry_copy)
    assert not at.exception
    assert any("not served, not logged" in i.value for i in at.info)
    assert at.button(key="fc_serve")

    _set_end(at, "2012-08-15")  # a replayed day: its logged forecast is shown as logged
    logged = logged_forecast("AAPL", "2012-08-15")
    assert any("Logged forecast" in i.value and "logged on" in i.value for i in at.info)
    forecast_metric = next(m for m in at.metric if m.label.startswith("Forecast for"))
    assert forecast_metric.label == f"Forecast for {logged.target_date}"
    assert forecast_metric.value == f"${logged.predicted_close:,.2f}"
    assert not any(b.key == "fc_serve" for b in at.button)

    _set_end(at, "2012-10-01")  # after the replay, before today: a what-if, never served
    assert any("not served, not logged" in i.value for i in at.info)
    assert not any(b.key == "fc_serve" for b in at.button)
    assert any("Only the latest data day" in c.value for c in at.caption)

    for end in ("2012-08-15", "2012-10-01", "2013-03-01", "2012-08-15", "2013-03-01"):
        _set_end(at, end).run()  # back and forth, and a rerun each time
        assert not at.exception
    app_again = page_app(PAGE).run()  # a refresh: a new session
    assert not app_again.exception
    assert _count(registry_copy) == before

    at.button(key="fc_serve").click().run()  # the explicit request for today: served and logged once
    assert not at.exception
    assert _count(registry_copy) == before + 1
    served = logged_forecast("AAPL", "2013-03-01")
    assert any("Logged forecast" in i.value for i in at.info) and not any(b.key == "fc_serve" for b in at.button)
    at.run()
    page_app(PAGE).run()
    _set_end(at, "2012-08-15")
    _set_end(at, "2013-03-01")
    assert _count(registry_copy) == before + 1
    assert logged_forecast("AAPL", "2013-03-01").prediction_id == served.prediction_id


def test_a_typed_ticker_with_markup_is_shown_literally(app):
    from core.text import escape_markdown

    app.session_state["fc_symbol"] = "[x](http://evil.example)"
    at = app.run()
    assert not at.exception
    message = next(e.value for e in at.error if "Unknown ticker" in e.value)
    assert escape_markdown("[X](HTTP://EVIL.EXAMPLE)") in message and "](HTTP" not in message
