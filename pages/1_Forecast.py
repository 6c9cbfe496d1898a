"""Forecast: the next close with its interval, the deployed model against naive, and training new models."""
from datetime import timedelta

import streamlit as st

from core.charts import price_forecast_figure
from core.market import MarketDataError, available_symbols, load_prices, source_label
from core.predict import comparison_table, live_performance, predict, prediction_log
from core.registry import ModelIntegrityError, RegistryError, deployed_model, get_model, register
from core.training import DEFAULT_PARAMS, MODEL_LABELS, MODEL_TYPES, train_model

st.set_page_config(page_title="Forecast · ML Stock Agent", page_icon="🔮", layout="wide")
st.title("🔮 Forecast")


@st.cache_data(show_spinner=False)
def prices_for(symbol: str):
    frame = load_prices(symbol)
    return frame, frame.attrs.get("source", "")


symbols = available_symbols()
symbol = st.selectbox("Ticker (pick one, or type any symbol: yfinance is tried when the network answers)", symbols,
                      index=symbols.index("AAPL") if "AAPL" in symbols else 0, accept_new_options=True, key="fc_symbol")
symbol = (symbol or "").strip().upper()
try:
    prices, source = prices_for(symbol)
except MarketDataError as exc:
    st.error(str(exc))
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
    st.info(refreshed)

first, last = prices.index[0].date(), prices.index[-1].date()
picked = st.date_input("Chart range (the forecast is made on the last day)",
                       (max(first, last - timedelta(days=180)), last), min_value=first, max_value=last,
                       key=f"fc_range_{symbol}")  # per ticker: each opens on its own latest data
if not isinstance(picked, tuple) or len(picked) != 2:
    st.info("Pick an end date too.")
    st.stop()
start, as_of = picked
window = prices.loc[str(start):str(as_of)]
if window.empty:
    st.error(f"No trading days for {symbol} between {start} and {as_of}.")
    st.stop()

# --- the forecast --------------------------------------------------------------------------------------
model = deployed_model(symbol)
forecast = None
if model is None:
    st.info(f"No model is deployed for {symbol}. Train one below, then deploy it on Model Management.")
else:
    # a date inside the training window is an in-sample forecast: shown, labelled, never logged as live
    in_sample = str(as_of) <= model["train_end"]
    memo_key = (symbol, str(as_of), model["model_id"])  # one logged prediction per request, not per rerun
    try:
        if st.session_state.get("fc_memo_key") != memo_key:
            st.session_state["fc_memo"] = predict(symbol, as_of, log_prediction=not in_sample).to_dict()
            st.session_state["fc_memo_key"] = memo_key
        forecast = st.session_state["fc_memo"]
    except (MarketDataError, RegistryError, ModelIntegrityError) as exc:
        st.error(f"Cannot forecast {symbol} on {as_of}: {exc}")

if forecast:
    change = forecast["predicted_close"] / forecast["last_close"] - 1
    served = get_model(forecast["model_id"])["metrics"]  # the interval is the serving model's (A/B arms differ)
    money = "${:,.0f}" if forecast["upper"] >= 1000 else "${:,.2f}"
    c1, c2, c3, c4 = st.columns([1, 1, 1.5, 0.9])
    c1.metric(f"Close on {forecast['as_of']}", f"${forecast['last_close']:,.2f}")
    c2.metric(f"Forecast for {forecast['target_date']}", f"${forecast['predicted_close']:,.2f}", f"{change:+.2%}")
    c3.metric(f"{served['interval_coverage_nominal']:.0%} interval",
              f"{money.format(forecast['lower'])}–{money.format(forecast['upper'])}",
              f"{served['interval_coverage_empirical']:.0%} covered on validation", delta_color="off",
              delta_arrow="off")
    c4.metric("Serving latency", f"{forecast['latency_ms']:.1f} ms")
    arm = f" (arm {forecast['arm']} of A/B test #{forecast['experiment_id']})" if forecast.get("experiment_id") else ""
    st.caption(f"Served by **{forecast['model_id']}**{arm}; deployed model: {model['model_id']}.")
    if in_sample:
        st.warning(f"{as_of} is inside the training window of {model['model_id']} (trained up to {model['train_end']}): "
                   "this forecast is in-sample, says nothing about live accuracy, and was not logged.")

history = prediction_log(symbol, start=start, end=as_of)
st.plotly_chart(price_forecast_figure(window, forecast, history, title=f"{symbol} daily prices"), key="fc_chart")

if model is not None:
    live = live_performance(symbol, as_of=as_of, days=30)
    st.subheader("Model vs naive (tomorrow = today)")
    st.dataframe(comparison_table(model, live), hide_index=True, column_config={
        "MAE $": st.column_config.NumberColumn(format="$%.3f"), "RMSE $": st.column_config.NumberColumn(format="$%.3f"),
        "MAPE %": st.column_config.NumberColumn(format="%.2f%%"), "direction %": st.column_config.NumberColumn(format="%.1f%%"),
    })
    skill_now = live["skill"] if live else model["metrics"]["skill"]
    where = "over the last 30 days live" if live else "on validation"
    if skill_now <= 0:
        st.warning(f"{model['model_id']} loses to the naive forecast {where} (skill {skill_now:+.3f}). "
                   "For daily stock returns this is common: treat its forecast with that in mind.")
    else:
        st.success(f"{model['model_id']} beats the naive forecast {where} (skill {skill_now:+.3f}).")
    st.caption("Direction % for naive is the share of up days (the \"always up\" baseline): naive itself predicts no move.")

# --- train a new model ---------------------------------------------------------------------------------
st.subheader("Train a new model")
with st.form("fc_train"):
    f1, f2 = st.columns(2)
    model_type = f1.selectbox("Model type", MODEL_TYPES, index=1, format_func=MODEL_LABELS.get, key="fc_type")
    window_days = f2.number_input("Training window (trading days)", 250, 4000, 1000, step=50, key="fc_window")
    st.caption(f"Trained on history up to {as_of} (the end of the chart range); validated walk-forward.")
    p1, p2 = st.columns(2)
    rf, xgb = DEFAULT_PARAMS["rf"], DEFAULT_PARAMS["xgb"]
    p1.markdown("**Random forest**")
    rf_trees = p1.slider("Trees", 50, 500, rf["n_estimators"], 50, key="fc_rf_trees")
    rf_depth = p1.slider("Max depth", 2, 12, rf["max_depth"], key="fc_rf_depth")
    rf_leaf = p1.slider("Min samples per leaf", 1, 100, rf["min_samples_leaf"], key="fc_rf_leaf")
    p2.markdown("**XGBoost**")
    xgb_trees = p2.slider("Boosting rounds", 50, 1000, xgb["n_estimators"], 50, key="fc_xgb_trees")
    xgb_depth = p2.slider("Max depth ", 2, 10, xgb["max_depth"], key="fc_xgb_depth")
    xgb_lr = p2.select_slider("Learning rate", [0.01, 0.02, 0.03, 0.05, 0.1, 0.2], xgb["learning_rate"], key="fc_xgb_lr")
    submitted = st.form_submit_button("Train and register", type="primary")

if submitted:
    params = {"rf": {"n_estimators": rf_trees, "max_depth": rf_depth, "min_samples_leaf": rf_leaf},
              "xgb": {"n_estimators": xgb_trees, "max_depth": xgb_depth, "learning_rate": xgb_lr}}.get(model_type, {})
    bar = st.progress(0.0, text="Starting")
    try:
        trained = train_model(symbol, model_type, train_end=as_of, window_days=int(window_days), params=params,
                              progress=lambda fraction, text: bar.progress(min(fraction, 1.0), text=text))
        new_id = register(trained, reason=f"trained from the Forecast page on {as_of}", actor="ui")
    except (MarketDataError, ValueError) as exc:
        bar.empty()
        st.error(str(exc))
    else:
        m = trained.metrics
        st.session_state["fc_trained"] = (new_id, m["mae"], m["naive"]["mae"], m["skill"])
        st.rerun()

if trained_info := st.session_state.get("fc_trained"):
    new_id, mae, naive_mae, skill_value = trained_info
    verdict = "beats" if skill_value > 0 else "does not beat"
    st.success(f"Registered **{new_id}** as a candidate: validation MAE ${mae:.3f} vs naive ${naive_mae:.3f} "
               f"(skill {skill_value:+.3f}, {verdict} naive). Review and deploy it on Model Management.")
    st.page_link("pages/2_Model_Management.py", label="Open Model Management", icon="🗂️")
