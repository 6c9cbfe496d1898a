"""Forecast: the next close with its interval, the deployed model against naive, the direction model's P(up) (the
deployed one, else the newest; its own "Serve and log"), and training new models. A page view is not a request: a served day shows the logged row, any other a what-if
(computed, never logged); only "Serve and log", offered for the ticker's latest data day, serves a forecast, and
the serving path logs it once. User text (typed tickers, messages quoting them, model ids built from them) goes
through `escape_markdown`.
"""
import streamlit as st

from core import direction_view, forecast_view as view, runbook
from core.charts import price_forecast_figure
from core.formatting import ERROR_METRIC_FORMATS
from core.lifecycle import register_with_artifacts
from core.market import MarketDataError, available_symbols
from core.predict import (InSampleForecastError, comparison_table, in_training_window, live_performance, logged_forecast,
                          predict, prediction_log)
from core.registry import ModelIntegrityError, RegistryError, deployed_model, get_model
from core.store import action_guard, page_guard
from core.text import escape_markdown

SERVING_ERRORS = (MarketDataError, RegistryError, ModelIntegrityError)
st.set_page_config(page_title="Forecast · ML Stock Agent", page_icon="🔮", layout="wide")
st.title("🔮 Forecast")

prices_for = st.cache_data(show_spinner=False)(view.prices_with_source)  # (prices, source), cleared by "Refresh prices"
with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    symbols = available_symbols()
linked = (st.query_params.get("ticker") or "").strip().upper()  # a deep link (?ticker=MSFT) opens on its ticker
symbol = st.selectbox("Ticker (pick one, or type any symbol: yfinance is tried when the network answers)", symbols,
                      index=view.symbol_index(symbols, linked), accept_new_options=True, key="fc_symbol")
symbol = (symbol or "").strip().upper()
st.query_params["ticker"] = symbol  # the URL follows the selection, so it can be shared
try:
    with page_guard(st.error, st.stop):
        prices, source = prices_for(symbol)
except MarketDataError as exc:
    st.error(escape_markdown(str(exc)))
    st.stop()
src_col, refresh_col = st.columns([4, 1])
src_col.caption(view.source_caption(source, prices))
if refresh_col.button("Refresh prices", key="fc_refresh", help="Ask yfinance again (bundled data when it does not answer)"):
    st.session_state["fc_refreshed"] = view.refresh_prices(symbol)
    prices_for.clear()
    st.rerun()
if refreshed := st.session_state.pop("fc_refreshed", None):
    st.info(escape_markdown(refreshed))
if "yfinance" not in source:  # offline or unreachable: the runbook says why and what to check
    src_col.expander(runbook.expander_label("troubleshooting")).markdown(runbook.section("troubleshooting"))
first, last = prices.index[0].date(), prices.index[-1].date()
picked = st.date_input("Chart range (the forecast shown is the one for its last day)", view.default_range(first, last),
                       min_value=first, max_value=last, key=f"fc_range_{symbol}")  # per ticker: its own latest data
if not isinstance(picked, tuple) or len(picked) != 2:
    st.info("Pick an end date too.")
    st.stop()
start, as_of = picked
window = prices.loc[str(start):str(as_of)]
if window.empty:
    st.error(escape_markdown(f"No trading days for {symbol} between {start} and {as_of}."))
    st.stop()

# --- the forecast --------------------------------------------------------------------------------------
day = window.index[-1]  # the trading day the forecast is made on (the range may end on a weekend)
today = prices.index[-1]  # the ticker's "today": its last data day
model = deployed_model(symbol)
logged = logged_forecast(symbol, day)  # a page view looks the served forecast up; it never serves one
forecast = logged.to_dict() if logged else None
if forecast is None and model is None:
    st.info(escape_markdown(f"No model is deployed for {symbol}. Train one below, then deploy it on Model Management."))
elif forecast is None:
    memo_key = (symbol, f"{day:%Y-%m-%d}", model["model_id"])  # the what-if is recomputed only when these change
    try:
        if st.session_state.get("fc_memo_key") != memo_key:
            st.session_state["fc_memo"] = predict(symbol, day, log_prediction=False).to_dict()
            st.session_state["fc_memo_key"] = memo_key
        forecast = st.session_state["fc_memo"]
    except SERVING_ERRORS as exc:
        st.error(escape_markdown(f"Cannot forecast {symbol} on {day:%Y-%m-%d}: {exc}"))

if forecast:
    served_by = get_model(forecast["model_id"])  # the interval is the serving model's (A/B arms differ)
    in_sample = in_training_window(served_by["train_end"], forecast["as_of"])
    is_logged = forecast.get("prediction_id") is not None
    st.info(view.forecast_banner(forecast))
    for col, card in zip(st.columns([1, 1, 1.5, 0.9]), view.forecast_cards(forecast, served_by["metrics"])):
        col.metric(**card)
    st.caption(view.served_caption(forecast, model))
    if in_sample:
        st.warning(view.in_sample_warning(forecast, served_by["train_end"]))
    if not is_logged and day == today and not in_sample:
        if st.button(f"Serve and log the forecast for {day:%Y-%m-%d}", type="primary", key="fc_serve", help=view.SERVE_HELP):
            with action_guard(st.error):  # a busy, read-only or full database: its message, nothing logged
                try:
                    predict(symbol, day)
                    st.rerun()
                except (*SERVING_ERRORS, InSampleForecastError) as exc:
                    st.error(escape_markdown(f"Cannot serve {symbol} on {day:%Y-%m-%d}: {exc}"))
    elif not is_logged and day != today:
        st.caption(view.past_day_caption(today))

history = prediction_log(symbol, start=start, end=as_of)
figure = price_forecast_figure(window, view.chart_forecast(forecast), history, title=f"{symbol} daily prices", zoom_days=45)
st.plotly_chart(figure, key="fc_chart")
st.caption("The chart opens on the last 45 days, next-day forecast included; double-click it to see the whole range.")

if model is not None:
    live = live_performance(symbol, as_of=as_of, days=view.LIVE_DAYS, model_id=model["model_id"])  # its own predictions
    st.subheader("Model vs naive (tomorrow = today)")
    formats = {column: st.column_config.NumberColumn(format=f) for column, f in ERROR_METRIC_FORMATS.items()}
    st.dataframe(comparison_table(model, live), hide_index=True, column_config=formats)
    kind, verdict = view.skill_verdict(model, as_of)  # the live skill Home and Monitoring show
    getattr(st, kind)(verdict)
    st.caption("Direction % for naive is the share of up days (the \"always up\" baseline): naive itself predicts no move.")

if section := direction_view.direction_section(symbol, day, state=st.session_state):  # P(up): served, or a what-if
    st.subheader(section.title)
    for col, card in zip(st.columns(4), section.cards):
        col.metric(**card)
    for element, kwargs in section.elements:
        getattr(st, element)(**kwargs)

# --- train a new model: the type is chosen outside the form, so the form shows only that type's settings --
st.subheader("Train a new model")
model_type = st.selectbox("Model type", view.TRAINABLE_TYPES, index=1, format_func=view.TYPE_LABELS.get, key="fc_type")
with st.form("fc_train"):
    window_days = st.number_input("Training window (trading days)", 250, 4000, 1000, step=50, key="fc_window")
    st.caption(f"Trained on history up to {as_of} (the end of the chart range); validated walk-forward.")
    params = {}
    for col, (param, widget, kwargs) in zip(st.columns(3), view.param_widgets(model_type)):
        params[param] = getattr(col, widget)(**kwargs)
    if note := view.form_note(model_type):
        st.caption(note)
    submitted = st.form_submit_button("Train and register", type="primary")

if submitted:
    bar = st.progress(0.0, text="Starting")  # training is 0-75 %, registering (artifacts, SHAP, card) the rest
    with action_guard(lambda message: (bar.empty(), st.error(message))):  # database or disk fault: its message
        try:
            trained = view.train(symbol, model_type, as_of, int(window_days), params, view.training_progress(bar.progress))
            bar.progress(0.8, text="Registering: saving the model, its SHAP artifacts and model card")
            new_id = register_with_artifacts(trained, reason=f"trained from the Forecast page on {as_of}", actor="ui")
            bar.progress(1.0, text=f"Done: {new_id} registered")
        except (MarketDataError, ValueError) as exc:
            bar.empty()
            st.error(escape_markdown(str(exc)))
        else:
            st.session_state["fc_trained"] = view.trained_summary(new_id, trained.metrics)
            st.rerun()

if trained_info := st.session_state.get("fc_trained"):
    st.success(view.trained_message(*trained_info))
    st.page_link(**view.model_management_link(trained_info[0]))
