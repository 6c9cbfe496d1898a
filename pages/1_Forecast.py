"""Forecast: the next close with its interval, the deployed model against naive, and training new models.

A page view is not a request. A day whose forecast was served shows the logged row; a day without
one shows a what-if (computed, never logged); only the "Serve and log" button, offered for the
ticker's latest data day, serves a forecast, and the serving path logs it once. User text (typed
tickers, messages quoting them, model ids built from them) goes through `escape_markdown`.
"""
from datetime import timedelta

import streamlit as st

from core.charts import price_forecast_figure
from core.market import MarketDataError, available_symbols, load_prices, source_label
from core.predict import (InSampleForecastError, comparison_table, in_training_window, live_performance, logged_forecast,
                          predict, prediction_log)
from core.lifecycle import register_with_artifacts
from core.registry import ModelIntegrityError, RegistryError, deployed_model, get_model
from core.store import action_guard, page_guard
from core.text import escape_markdown
from core.training import DEFAULT_PARAMS, MODEL_LABELS, MODEL_TYPES, train_model

st.set_page_config(page_title="Forecast · ML Stock Agent", page_icon="🔮", layout="wide")
st.title("🔮 Forecast")


@st.cache_data(show_spinner=False)
def prices_for(symbol: str):
    frame = load_prices(symbol)
    return frame, frame.attrs.get("source", "")


with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    symbols = available_symbols()
linked = (st.query_params.get("ticker") or "").strip().upper()  # a deep link (?ticker=MSFT) opens on its ticker
symbol = st.selectbox("Ticker (pick one, or type any symbol: yfinance is tried when the network answers)", symbols,
                      index=symbols.index(linked) if linked in symbols else symbols.index("AAPL") if "AAPL" in symbols else 0,
                      accept_new_options=True, key="fc_symbol")
symbol = (symbol or "").strip().upper()
st.query_params["ticker"] = symbol  # the URL follows the selection, so it can be shared
try:
    with page_guard(st.error, st.stop):
        prices, source = prices_for(symbol)
except MarketDataError as exc:
    st.error(escape_markdown(str(exc)))
    st.stop()
src_col, refresh_col = st.columns([4, 1])
src_col.caption(f"Data source: **{source_label(source)}** · {len(prices):,} trading days, "
                f"{prices.index[0]:%Y-%m-%d} → {prices.index[-1]:%Y-%m-%d}")
if refresh_col.button("Refresh prices", key="fc_refresh", help="Ask yfinance again (bundled data when it does not answer)"):
    try:
        fresh = load_prices(symbol, refresh=True)
        st.session_state["fc_refreshed"] = f"{symbol} reloaded from {source_label(fresh.attrs['source'])}."
    except MarketDataError as exc:
        st.session_state["fc_refreshed"] = f"Refresh failed: {exc}"
    prices_for.clear()
    st.rerun()
if refreshed := st.session_state.pop("fc_refreshed", None):
    st.info(escape_markdown(refreshed))

first, last = prices.index[0].date(), prices.index[-1].date()
picked = st.date_input("Chart range (the forecast shown is the one for its last day)",
                       (max(first, last - timedelta(days=180)), last), min_value=first, max_value=last,
                       key=f"fc_range_{symbol}")  # per ticker: each opens on its own latest data
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
    except (MarketDataError, RegistryError, ModelIntegrityError) as exc:
        st.error(escape_markdown(f"Cannot forecast {symbol} on {day:%Y-%m-%d}: {exc}"))

if forecast:
    served_by = get_model(forecast["model_id"])  # the interval is the serving model's (A/B arms differ)
    served = served_by["metrics"]
    in_sample = in_training_window(served_by["train_end"], forecast["as_of"])
    is_logged = forecast.get("prediction_id") is not None
    if is_logged:
        logged_at = forecast["logged_at"][:16].replace("T", " ")
        st.info(f"**Logged forecast**: served for {forecast['as_of']} and logged on {logged_at} UTC. "
                "Viewing it again does not log it again.")
    else:
        st.info(f"**What-if for {forecast['as_of']}: not served, not logged.** No forecast was served for this day; "
                "this one is computed now by the model that would serve it.")
    change = forecast["predicted_close"] / forecast["last_close"] - 1
    money = "${:,.0f}" if forecast["predicted_close"] >= 1000 else "${:,.2f}"
    c1, c2, c3, c4 = st.columns([1, 1, 1.5, 0.9])
    c1.metric(f"Close on {forecast['as_of']}", f"${forecast['last_close']:,.2f}")
    c2.metric(f"Forecast for {forecast['target_date']}", f"${forecast['predicted_close']:,.2f}", f"{change:+.2%}")
    if forecast["lower"] is not None and forecast["upper"] is not None:
        c3.metric(f"{served['interval_coverage_nominal']:.0%} interval",
                  f"{money.format(forecast['lower'])}–{money.format(forecast['upper'])}",
                  f"{served['interval_coverage_empirical']:.0%} covered on validation", delta_color="off",
                  delta_arrow="off")
    else:  # a prediction recorded from outside the app carries no interval
        c3.metric("Interval", "not logged")
    c4.metric("Serving latency", f"{forecast['latency_ms']:.1f} ms" if forecast["latency_ms"] is not None else "n/a")
    arm = f" (arm {forecast['arm']} of A/B test #{forecast['experiment_id']})" if forecast.get("experiment_id") else ""
    deployed_text = f"; deployed model: {escape_markdown(model['model_id'])}" if model else ""
    st.caption(f"{'Served' if is_logged else 'Computed'} by **{escape_markdown(forecast['model_id'])}**{arm}{deployed_text}.")
    if in_sample:
        st.warning(f"{forecast['as_of']} is inside the training window of {escape_markdown(forecast['model_id'])} (trained "
                   f"up to {served_by['train_end']}): this forecast is in-sample, says nothing about live accuracy, and "
                   + ("was logged before such forecasts were refused." if is_logged else "was not logged."))
    if not is_logged and day == today and not in_sample:
        if st.button(f"Serve and log the forecast for {day:%Y-%m-%d}", type="primary", key="fc_serve",
                     help="Serve the forecast for the latest data day through the serving path and log it once; "
                          "A/B tests, live metrics and alerts count it."):
            with action_guard(st.error):  # a busy, read-only or full database: its message, nothing logged
                try:
                    predict(symbol, day)
                    st.rerun()
                except (MarketDataError, RegistryError, ModelIntegrityError, InSampleForecastError) as exc:
                    st.error(escape_markdown(f"Cannot serve {symbol} on {day:%Y-%m-%d}: {exc}"))
    elif not is_logged and day != today:
        st.caption(f"Only the latest data day ({today:%Y-%m-%d}) can be served. A past day shows the forecast logged for it, "
                   "or this what-if when none was served.")

history = prediction_log(symbol, start=start, end=as_of)
chart_forecast = forecast and {**forecast, "lower": forecast["lower"] if forecast["lower"] is not None else forecast["predicted_close"],
                               "upper": forecast["upper"] if forecast["upper"] is not None else forecast["predicted_close"]}
st.plotly_chart(price_forecast_figure(window, chart_forecast, history, title=f"{symbol} daily prices", zoom_days=45),
                key="fc_chart")
st.caption("The chart opens on the last 45 days, next-day forecast included; double-click it to see the whole range.")

if model is not None:
    live = live_performance(symbol, as_of=as_of, days=30, model_id=model["model_id"])  # its own predictions only
    st.subheader("Model vs naive (tomorrow = today)")
    st.dataframe(comparison_table(model, live), hide_index=True, column_config={
        "MAE $": st.column_config.NumberColumn(format="$%.3f"), "RMSE $": st.column_config.NumberColumn(format="$%.3f"),
        "MAPE %": st.column_config.NumberColumn(format="%.2f%%"), "direction %": st.column_config.NumberColumn(format="%.1f%%"),
    })
    skill_now = live["skill"] if live else model["metrics"]["skill"]
    where = "over the last 30 days live" if live else "on validation (no live history yet: it has not served a scored forecast)"
    certified = "" if model["certified"] else " It is not certified (Model Management runs the five checks)."
    if skill_now <= 0:
        st.warning(f"{escape_markdown(model['model_id'])} loses to the naive forecast {where} (skill {skill_now:+.3f}). "
                   f"For daily stock returns this is common: treat its forecast with that in mind.{certified}")
    elif certified:  # green only for a certified model that beats naive
        st.warning(f"{escape_markdown(model['model_id'])} beats the naive forecast {where} (skill {skill_now:+.3f}).{certified}")
    else:
        st.success(f"{escape_markdown(model['model_id'])} beats the naive forecast {where} (skill {skill_now:+.3f}).")
    st.caption("Direction % for naive is the share of up days (the \"always up\" baseline): naive itself predicts no move.")

# --- train a new model ---------------------------------------------------------------------------------
st.subheader("Train a new model")
# the type is chosen outside the form, so the form shows only that type's settings
model_type = st.selectbox("Model type", MODEL_TYPES, index=1, format_func=MODEL_LABELS.get, key="fc_type")
with st.form("fc_train"):
    window_days = st.number_input("Training window (trading days)", 250, 4000, 1000, step=50, key="fc_window")
    st.caption(f"Trained on history up to {as_of} (the end of the chart range); validated walk-forward.")
    p1, p2, p3 = st.columns(3)
    rf, xgb = DEFAULT_PARAMS["rf"], DEFAULT_PARAMS["xgb"]
    if model_type == "rf":
        params = {"n_estimators": p1.slider("Trees", 50, 500, rf["n_estimators"], 50, key="fc_rf_trees"),
                  "max_depth": p2.slider("Max depth", 2, 12, rf["max_depth"], key="fc_rf_depth"),
                  "min_samples_leaf": p3.slider("Min samples per leaf", 1, 100, rf["min_samples_leaf"], key="fc_rf_leaf")}
    elif model_type == "xgb":
        params = {"n_estimators": p1.slider("Boosting rounds", 50, 1000, xgb["n_estimators"], 50, key="fc_xgb_trees"),
                  "max_depth": p2.slider("Max depth", 2, 10, xgb["max_depth"], key="fc_xgb_depth"),
                  "learning_rate": p3.select_slider("Learning rate", [0.01, 0.02, 0.03, 0.05, 0.1, 0.2],
                                                    xgb["learning_rate"], key="fc_xgb_lr")}
    else:
        params = {}
        st.caption("The naive baseline has no settings: tomorrow's close = today's.")
    submitted = st.form_submit_button("Train and register", type="primary")

if submitted:
    bar = st.progress(0.0, text="Starting")  # training is 0-75 %, registering (artifacts, SHAP, card) the rest
    with action_guard(lambda message: (bar.empty(), st.error(message))):  # database or disk fault: its message
        try:
            trained = train_model(symbol, model_type, train_end=as_of, window_days=int(window_days), params=params,
                                  progress=lambda fraction, text: bar.progress(0.75 * min(fraction, 1.0),
                                                                               text=text if fraction < 1 else "Trained"))
            bar.progress(0.8, text="Registering: saving the model, its SHAP artifacts and model card")
            new_id = register_with_artifacts(trained, reason=f"trained from the Forecast page on {as_of}", actor="ui")
            bar.progress(1.0, text=f"Done: {new_id} registered")
        except (MarketDataError, ValueError) as exc:
            bar.empty()
            st.error(escape_markdown(str(exc)))
        else:
            m = trained.metrics
            st.session_state["fc_trained"] = (new_id, m["mae"], m["naive"]["mae"], m["skill"])
            st.rerun()

if trained_info := st.session_state.get("fc_trained"):
    new_id, mae, naive_mae, skill_value = trained_info
    verdict = "beats" if skill_value > 0 else "does not beat"
    # \$: two dollar signs in one markdown string would render the text between them as LaTeX
    st.success(f"Registered **{escape_markdown(new_id)}** as a candidate: validation MAE \\${mae:.3f} vs naive \\${naive_mae:.3f} "
               f"(skill {skill_value:+.3f}, {verdict} naive). Review and deploy it on Model Management.")
    st.page_link("pages/2_Model_Management.py", label=f"Open Model Management on {new_id}", icon="🗂️",
                 query_params={"model": new_id})
