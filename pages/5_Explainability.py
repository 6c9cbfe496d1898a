"""Explainability: why a model predicts what it does (SHAP global, one day, dependence, two versions compared, LIME)."""
import pandas as pd
import streamlit as st

from core import explain, registry
from core.charts import (importance_bar_figure, importance_compare_figure, lime_weights_figure, shap_beeswarm_figure,
                         shap_dependence_figure, shap_waterfall_figure)
from core.config import get_settings
from core.text import escape_markdown
from core.explain import ExplainError
from core.market import MarketDataError, load_prices
from core.registry import ModelIntegrityError, RegistryError
from core.store import page_guard

ERRORS = (ExplainError, MarketDataError, RegistryError, ModelIntegrityError)
st.set_page_config(page_title="Explainability · ML Stock Agent", page_icon="🔍", layout="wide")
st.title("🔍 Explainability")
st.caption("SHAP values say how far each feature moved a prediction from the model's average output (the base value), "
           "in next-day log return: base value + contributions = prediction, exactly (TreeSHAP).")


@st.cache_data(show_spinner=False)
def cached_explanation(model_id: str, artifact_sha256: str, start: str, end: str) -> explain.Explanation:
    """Keyed by the artifact's hash too, so a model id reused by another registry never hits a stale entry."""
    return explain.explain_window(model_id, start=start, end=end)


@st.cache_data(show_spinner=False)
def cached_permutation(model_id: str, artifact_sha256: str, start: str, end: str) -> pd.DataFrame:
    explanation = cached_explanation(model_id, artifact_sha256, start, end)
    rows, _ = explain.summary_rows(explanation)  # capped: a long range costs what a short one does
    return explain.permutation_importance_frame(model_id, explanation.frame.iloc[rows])


@st.cache_data(show_spinner=False)
def trading_days(symbol: str) -> pd.DatetimeIndex:
    return load_prices(symbol).index


with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    models = registry.list_models()
if not models:
    st.info("No models yet. Train one on the Forecast page.")
    st.stop()
c_symbol, c_model, c_range = st.columns([1, 2, 2])
link = {"ticker": (st.query_params.get("ticker") or "").upper(), "model": st.query_params.get("model", "")}
symbols = sorted({m["symbol"] for m in models})
linked_symbol = next((m["symbol"] for m in models if m["model_id"] == link["model"]), link["ticker"])
symbol = c_symbol.selectbox("Ticker", symbols, key="ex_symbol",
                            index=symbols.index(linked_symbol) if linked_symbol in symbols else 0)
with page_guard(st.error, st.stop):
    candidates = {m["model_id"]: m for m in registry.list_models(symbol)}
    days = trading_days(symbol)
ids = list(candidates)
deployed = next((i for i, m in candidates.items() if m["status"] == "deployed"), ids[0])
model_id = c_model.selectbox("Model", ids, index=ids.index(link["model"] if link["model"] in ids else deployed), key="ex_model",
                             format_func=lambda i: f"{i} ({candidates[i]['status']})")
st.query_params.update({"ticker": symbol, "model": model_id})  # the URL follows the selection, so it can be shared
default_start = days[max(60, len(days) - get_settings().explain_window_days)]
picked = c_range.date_input("Date range", value=(default_start.date(), days[-1].date()), min_value=days[min(60, len(days) - 1)].date(),
                            max_value=days[-1].date(), key=f"ex_range_{model_id}")  # re-derived for each model and ticker
if not isinstance(picked, tuple) or len(picked) != 2:
    st.info("Pick the end of the date range.")
    st.stop()
start, end = (f"{d:%Y-%m-%d}" for d in picked)
sha = {i: m["artifact_sha256"] for i, m in candidates.items()}

files = explain.artifact_files(model_id)
if files:
    cols = st.columns(len(files))
    for col, (name, path) in zip(cols, files.items()):
        col.download_button(f"⬇ {path.name}", path.read_bytes(), f"{model_id}_{path.name}", key=f"ex_dl_{name}")
if candidates[model_id]["model_type"] == "naive":
    st.info("This is the naive baseline (tomorrow's close = today's): it uses no features, so there is nothing to explain.")
    st.stop()

progress = st.progress(0.05, text=f"Computing SHAP values for {model_id}, {start} to {end}…")
try:
    with page_guard(st.error, st.stop):
        explanation = cached_explanation(model_id, sha[model_id], start, end)
except ERRORS as exc:
    progress.empty()
    st.error(escape_markdown(exc))
    st.stop()
values, X = explanation.shap, explanation.X
rows, sampled_note = explain.summary_rows(explanation)
progress.progress(0.6, text=f"Permutation importance: each feature shuffled {explain.PERMUTATION_REPEATS} times on "
                            f"{len(rows):,} days…")
try:
    permutation, permutation_error = cached_permutation(model_id, sha[model_id], start, end).set_index("feature"), None
except ERRORS as exc:
    permutation, permutation_error = None, exc
progress.empty()
st.caption(f"SHAP values of {escape_markdown(model_id)}: {len(explanation.frame):,} trading days, {start} to {end}.")

tab_global, tab_local, tab_dependence, tab_compare = st.tabs(["Global", "Local", "Dependence", "Compare"])
with tab_global:
    g1, g2 = st.columns([3, 2])
    if sampled_note:
        st.caption(sampled_note)
    g1.plotly_chart(shap_beeswarm_figure(values.values[rows], X.iloc[rows], values.feature_names, title="SHAP summary"),
                    key="ex_beeswarm")
    g2.plotly_chart(importance_bar_figure(explain.global_importance(values), "Mean |SHAP|"), key="ex_bar")
    if permutation_error is not None:
        st.warning(escape_markdown(f"Permutation importance: {permutation_error}"))
    else:
        st.plotly_chart(importance_bar_figure(permutation["permutation_mean"], "Permutation importance on this window",
                                              "rise in MAE (log return) when the feature is shuffled",
                                              error=permutation["permutation_std"]), key="ex_permutation")

with tab_local:
    l1, l2 = st.columns([2, 1])
    day = l1.selectbox("Day", list(reversed(explanation.frame.index)), format_func=lambda d: f"{d:%Y-%m-%d}", key="ex_day")
    units = l2.radio("Units", ["log return (exact)", "$ (order-dependent)"], horizontal=True, key="ex_units")
    summary = explain.day_summary(explanation, day)
    m1, m2, m3 = st.columns(3)
    m1.metric("Base value", f"${summary['base_close']:.2f}", f"{summary['base_return']:+.3%} log return", delta_color="off", delta_arrow="off")
    m2.metric("Prediction (next close)", f"${summary['predicted_close']:.2f}", f"{summary['predicted_return']:+.3%}")
    m3.metric("Actual", "not known yet" if summary["actual_close"] is None else f"${summary['actual_close']:.2f}",
              None if summary["actual_return"] is None else f"{summary['actual_return']:+.3%}")
    in_price = units.startswith("$")
    steps = explain.waterfall_steps(explanation, day, units="price" if in_price else "return")
    st.plotly_chart(shap_waterfall_figure(
        steps, summary["base_close"] if in_price else summary["base_return"],
        summary["predicted_close"] if in_price else summary["predicted_return"], "price" if in_price else "return",
        f"From base value to prediction, close of {summary['day']:%Y-%m-%d} ${summary['last_close']:.2f}"), key="ex_waterfall")
    if in_price:
        st.caption("In $, each step is last close × (e^cumulative − e^previous), applied in order of |SHAP|: the steps add "
                   "up to the predicted close exactly, but a step's size depends on that order.")
    lime_key = (model_id, f"{day:%Y-%m-%d}")  # the result stays while other widgets change, until model or day does
    if st.button("Explain this day with LIME", key="ex_lime"):
        try:
            with st.spinner("LIME: fitting a local linear surrogate on 2,000 perturbed samples…"):
                st.session_state["ex_lime_result"] = (lime_key, explain.lime_explanation(model_id, explanation, day))
        except ERRORS as exc:
            st.error(escape_markdown(str(exc)))
    stored = st.session_state.get("ex_lime_result")
    if stored and stored[0] == lime_key:
        lime = stored[1]
        st.plotly_chart(lime_weights_figure(lime["weights"]), key="ex_lime_chart")
        st.caption(f"LIME's local model predicts {lime['local_prediction']:+.3e} vs the model's {lime['model_prediction']:+.3e} "
                   f"(R² of the surrogate {lime['score']:.2f}). LIME samples, so its weights are approximate; SHAP is exact.")

with tab_dependence:
    ranked = list(explain.global_importance(values).index)
    d1, d2 = st.columns(2)
    feature = d1.selectbox("Feature", ranked, key="ex_feature")
    partner = explain.interaction_partner(values, X, feature)
    colour = d2.selectbox("Colour by", [f"auto: {partner}", *[f for f in ranked if f != feature]], key="ex_colour")
    colour = partner if colour.startswith("auto: ") else colour
    j = values.feature_names.index(feature)
    shown = X.iloc[rows]
    st.plotly_chart(shap_dependence_figure(shown[feature].to_numpy(), values.values[rows, j], shown[colour].to_numpy(),
                                           feature, colour), key="ex_dependence")
    if sampled_note:
        st.caption(sampled_note)

with tab_compare:
    others = [i for i in ids if i != model_id and candidates[i]["model_type"] != "naive"]
    if not others:
        st.info(f"{escape_markdown(symbol)} has no other model with features to compare with.")
    else:
        parent = candidates[model_id].get("parent_id")
        other = st.selectbox("Compare with", others, index=others.index(parent) if parent in others else 0, key="ex_other")
        try:
            with st.spinner(f"SHAP values of {other}…"):
                table = explain.compare_importance(cached_explanation(other, sha[other], start, end).shap, values, (other, model_id))
            st.plotly_chart(importance_compare_figure(table, other, model_id), key="ex_compare_chart")
            st.dataframe(table, hide_index=True, column_config={
                other: st.column_config.NumberColumn(format="%.2e"), model_id: st.column_config.NumberColumn(format="%.2e"),
                "rank change": st.column_config.NumberColumn(help="positive: the feature climbed in the ranking")})
        except ERRORS as exc:
            st.error(str(exc))
