"""Drift: check a model's inputs, errors and predictions against its training window; history of checks."""
import html

import streamlit as st

from core import drift, drift_kernels, drift_report, drift_watch, registry, runbook
from core.charts import SEVERITY_COLORS, empty_figure_note
from core.drift_charts import (drift_error_stream_figure, drift_overlay_figure, drift_verdict_history_figure, onset_price_figure,
                               sequential_statistics_figure)
from core.drift_view import (PSI_P_EXPLAINED, episode_table, feature_table, performance_card, prediction_label,
                             verdict_history)
from core.config import get_settings
from core.formatting import number
from core.text import escape_markdown
from core.market import MarketDataError, load_prices
from core.registry import ModelIntegrityError, RegistryError
from core.store import page_guard

st.set_page_config(page_title="Drift · ML Stock Agent", page_icon="🌊", layout="wide")
st.title("🌊 Drift detection")
st.caption("Compares the features of the last trading days with the model's training window (PSI, KS, Wasserstein), its live error "
           "with validation, the market's volatility, its predictions, and streams its daily errors through ADWIN and Page-Hinkley.")

with page_guard(st.error, st.stop):
    models = registry.list_models(model_types=registry.DEPLOYABLE_TYPES)  # price and direction models
if not models:
    st.info("No models yet. Train one on the Forecast page (or run `python -m core.demo`).")
    st.stop()


@st.cache_data(show_spinner=False)
def feature_windows(model_id: str, as_of: str, window_days: int):
    """The reference and current feature frames of a check (for the overlays)."""
    return drift.model_windows(registry.get_model(model_id), as_of, window_days)


settings, symbols = get_settings(), sorted({m["symbol"] for m in models})
col_symbol, col_model = st.columns(2)
link = {"model": st.query_params.get("model", ""), "ticker": (st.query_params.get("ticker") or "").upper()}
linked_model = next((m for m in models if m["model_id"] == link["model"]), None)  # ?model= beats ?ticker=
linked_symbol = linked_model["symbol"] if linked_model else link["ticker"]
symbol = col_symbol.selectbox("Ticker", symbols, key="drift_symbol",
                              index=symbols.index(linked_symbol) if linked_symbol in symbols else 0)
choices = [m["model_id"] for m in models if m["symbol"] == symbol]
with page_guard(st.error, st.stop):
    deployed = registry.deployed_model(symbol)
    preferred = link["model"] if link["model"] in choices else deployed["model_id"] if deployed else choices[0]
    model_id = col_model.selectbox("Model", choices, key="drift_model", index=choices.index(preferred))
    # the ticker's data bounds the date: from a full window after training to the last trading day (the default)
    first_day, last_day = drift.as_of_bounds(model_id, settings.drift_window_days)
st.query_params.update({"ticker": symbol, "model": model_id})  # the URL follows the selection, so it can be shared

with st.form("drift_form"):
    c1, c2 = st.columns(2)
    window_days = c1.slider("Current window (trading days)", 10, 120, settings.drift_window_days, key="drift_window")
    as_of = c2.date_input("As of", last_day.date(), min_value=first_day.date(), max_value=last_day.date(),
                          key=f"drift_as_of_{model_id}",
                          help=f"Trading days of {symbol}'s data after the training window: {first_day:%Y-%m-%d} to {last_day:%Y-%m-%d}.")
    run = st.form_submit_button("Check for Drift", type="primary")

if run:
    try:
        with st.spinner(f"Checking {model_id} as of {as_of}..."), page_guard(st.error, st.stop):
            st.session_state["drift_report"] = drift.check_model(model_id, as_of, window_days).to_dict()
    except (drift_kernels.DriftInputError, MarketDataError, RegistryError, ModelIntegrityError) as exc:
        st.session_state.pop("drift_report", None)
        st.error(escape_markdown(exc))

data = st.session_state.get("drift_report")
if data and data["model_id"] == model_id:
    report = drift_report.DriftReport.from_dict(data)
    color = SEVERITY_COLORS[report.severity]
    st.markdown(f"### Verdict: <span style='color:{color}'>{report.severity.upper()}</span> "
                f"{'(drift)' if report.overall_drift else ''} · {html.escape(report.model_id)} as of {report.as_of}",
                unsafe_allow_html=True)
    retrain, why = drift_report.should_retrain(report)
    if retrain:
        e1, e2 = st.columns([2, 1], vertical_alignment="center")
        e1.error("Drift detected: model needs retraining")
        e2.page_link("pages/2_Model_Management.py", label="Retrain Now on Model Management", icon="🗂️",
                     query_params={"model": model_id, "action": "retrain"}, help=f"Opens Model Management on {model_id}")
    if report.sequential:  # when it changed, in words (the sequential detectors)
        st.warning(escape_markdown(drift_watch.in_words(report.sequential)))
    for reason in report.reasons:
        st.markdown(f"- {escape_markdown(reason)}")
    if not report.reasons:
        st.success("No drift detected.")
    st.caption(f"Retrain? {'yes' if retrain else 'no'}: {escape_markdown(why)}  \nRule: {escape_markdown(report.dataset.get('rule', ''))}")
    st.expander(runbook.expander_label("drift")).markdown(runbook.section("drift"))  # each severity: check, fix

    perf, concept = report.performance, report.concept
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Drifted features", f"{report.dataset['n_drifted']} / {report.dataset['n_features']}",
              f"{report.dataset['drifted_share']:.0%}", delta_color="off", delta_arrow="off")
    m2.metric(**performance_card(perf))  # MAE of a price model, Brier score of a direction model's P(up)
    m3.metric("Volatility vs training", "x" + number(concept.get("volatility_ratio"), ".2f"),
              f"Levene p={number(concept.get('volatility_p_value'), '.1e')}", delta_color="off", delta_arrow="off")
    psi_value, psi_why = prediction_label(report.prediction)
    m4.metric("Prediction PSI", psi_value, psi_why.split(":")[0], delta_color="red" if report.prediction.get("drift") else "off",
              delta_arrow="off", help="The model's predicted returns in the window against its validation predictions, "
                                      "judged by the same three tests as a feature.")
    st.caption(f"Prediction PSI {psi_value}: {escape_markdown(psi_why)} (the same three tests as a feature).")

    st.subheader("Per-feature statistics")
    st.caption(f"Why: a feature drifts when all three tests agree: {escape_markdown(report.dataset.get('rule', ''))}. "
               f"{PSI_P_EXPLAINED}")
    col = st.column_config.NumberColumn
    st.dataframe(feature_table(report.features, alpha=report.dataset.get("alpha")), hide_index=True, key="drift_features_table", column_config={
        "why": st.column_config.TextColumn(width="large"), "psi": col("PSI", format="%.3f"),
        "psi_p_value": col("PSI p (own windows)", format="%.3f"), "p_value": col("KS p", format="%.2e"),
        "ks_stat": col(format="%.3f"), "wasserstein": col(format="%.2f")})
    feature = st.selectbox("Feature to overlay", report.features["feature"].tolist(), key="drift_feature")
    reference, current = feature_windows(model_id, report.as_of, report.window_days)
    st.plotly_chart(drift_overlay_figure(reference[feature], current[feature], feature), key="drift_overlay")
    st.plotly_chart(drift_error_stream_figure(report.streaming, report.dataset.get("current_start")), key="drift_stream")
    st.download_button("Download report (JSON)", report.to_json(), f"drift_{model_id}_{report.as_of}.json",
                       "application/json", key="drift_download")

st.subheader("When did it change? Sequential detectors")  # issue 13
with page_guard(st.error, st.stop):
    watch = drift_watch.history(model_id)
    current, episodes = drift_watch.alarms(model_id), drift_watch.episodes(model_id)
if watch.empty:
    st.info("No sequential-detector state for this model yet: the daily cycle computes it for deployed models, one "
            "trading day at a time (`python scheduled_tasks.py --once`, or `--replay START END` for past days).")
else:
    close = load_prices(symbol, start=watch["as_of"].min(), end=watch["as_of"].max())["close"]
    last = f"{watch['as_of'].max():%Y-%m-%d}"
    if current:
        st.warning(f"Alarms of the last {drift_watch.HOLD_DAYS} trading days to {last} (older episodes: the table "
                   f"below). {escape_markdown(drift_watch.in_words(current))}")
    else:
        st.success(f"No sequential alarm in the last {drift_watch.HOLD_DAYS} trading days up to {last}.")
    st.caption("CUSUM detectors on the daily innovations (the day's return, the model's error, each feature's change), "
               "calibrated on the training window so that on calm data they raise about one false alarm per model per "
               "year. **Alarm**: a detector's evidence reached its threshold (1 on the chart); it then restarts from "
               "zero, so a change that lasts alarms again and again (the alarm days of one episode below). **Onset**: "
               "the last day the evidence was at zero before the alarm, i.e. when the change began to show.")
    st.plotly_chart(sequential_statistics_figure(watch), key="drift_sequential")
    st.plotly_chart(onset_price_figure(close, episodes), key="drift_onset")
    if episodes:
        st.markdown(f"**Alarm episodes** ({len(episodes)}, newest first, {watch['as_of'].min():%Y-%m-%d} to {last})")
        st.dataframe(episode_table(episodes), hide_index=True, key="drift_episodes",
                     column_config={"what changed": st.column_config.TextColumn(width="medium")})

st.subheader("History of checks")
with page_guard(st.error, st.stop):
    history = drift.drift_history(model_id)
if history.empty:
    st.info("No stored checks for this model yet: run one above.")
else:
    st.dataframe(history.drop(columns=["id"]), hide_index=True, key="drift_history_table")
    codes, psis = verdict_history(model_id)
    if note := empty_figure_note(len(codes), "stored checks"):
        st.caption(note)
    else:
        st.plotly_chart(drift_verdict_history_figure(codes, psis), key="drift_psi_history")
