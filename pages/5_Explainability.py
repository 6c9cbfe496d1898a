"""Explainability: why a model predicts what it does (SHAP global, one day, dependence, two versions compared, LIME)."""
import pandas as pd
import streamlit as st

from core import explain, registry
from core import explain_view as view
from core.explain_charts import (importance_bar_figure, importance_compare_figure, lime_weights_figure, shap_beeswarm_figure,
                                 shap_dependence_figure, shap_waterfall_figure)
from core.text import escape_markdown
from core.explain import ExplainError
from core.market import MarketDataError
from core.registry import ModelIntegrityError, RegistryError
from core.store import page_guard

ERRORS = (ExplainError, MarketDataError, RegistryError, ModelIntegrityError)
st.set_page_config(page_title="Explainability · ML Stock Agent", page_icon="🔍", layout="wide")
st.title("🔍 Explainability")
st.caption(view.SHAP_CAPTION)


@st.cache_data(show_spinner=False)
def cached_explanation(model_id: str, artifact_sha256: str, start: str, end: str) -> explain.Explanation:
    """Keyed by the artifact's hash too, so a model id reused by another registry never hits a stale entry."""
    return explain.explain_window(model_id, start=start, end=end)


@st.cache_data(show_spinner=False)
def cached_permutation(model_id: str, artifact_sha256: str, start: str, end: str) -> pd.DataFrame:
    explanation = cached_explanation(model_id, artifact_sha256, start, end)
    rows, _ = explain.summary_rows(explanation)  # capped: a long range costs what a short one does
    return explain.permutation_importance_frame(model_id, explanation.frame.iloc[rows])


trading_days = st.cache_data(show_spinner=False)(view.trading_days)

with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    models = registry.list_models()
if not models:
    st.info("No models yet. Train one on the Forecast page.")
    st.stop()
c_symbol, c_model, c_range = st.columns([1, 2, 2])
link = {"ticker": (st.query_params.get("ticker") or "").upper(), "model": st.query_params.get("model", "")}
symbols, symbol_index = view.symbol_options(models, link["ticker"], link["model"])
symbol = c_symbol.selectbox("Ticker", symbols, key="ex_symbol", index=symbol_index)
with page_guard(st.error, st.stop):
    candidates = {m["model_id"]: m for m in registry.list_models(symbol)}
    days = trading_days(symbol)
ids, model_index = view.model_options(candidates, link["model"])
labels = view.model_labels(candidates)
model_id = c_model.selectbox("Model", ids, index=model_index, key="ex_model", format_func=labels.get)
st.query_params.update({"ticker": symbol, "model": model_id})  # the URL follows the selection, so it can be shared
picked = c_range.date_input("Date range", **view.range_bounds(days), key=f"ex_range_{model_id}")  # per model and ticker
if not isinstance(picked, tuple) or len(picked) != 2:
    st.info("Pick the end of the date range.")
    st.stop()
start, end = (f"{d:%Y-%m-%d}" for d in picked)
sha = {i: m["artifact_sha256"] for i, m in candidates.items()}

if files := explain.artifact_files(model_id):
    for col, (name, path) in zip(st.columns(len(files)), files.items()):
        col.download_button(f"⬇ {path.name}", path.read_bytes(), f"{model_id}_{path.name}", key=f"ex_dl_{name}")
if candidates[model_id]["model_type"] == "naive":
    st.info(view.NAIVE_NOTE)
    st.stop()

progress = st.progress(0.05, text=view.shap_progress(model_id, start, end))
try:
    with page_guard(st.error, st.stop):
        explanation = cached_explanation(model_id, sha[model_id], start, end)
except ERRORS as exc:
    progress.empty()
    st.error(escape_markdown(exc))
    st.stop()
values, X = explanation.shap, explanation.X
rows, sampled_note = explain.summary_rows(explanation)
progress.progress(0.6, text=view.permutation_progress(explain.PERMUTATION_REPEATS, len(rows)))
try:
    permutation, permutation_error = cached_permutation(model_id, sha[model_id], start, end).set_index("feature"), None
except ERRORS as exc:
    permutation, permutation_error = None, exc
progress.empty()
st.caption(view.window_caption(model_id, len(explanation.frame), start, end))

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
    units = view.waterfall_units(l2.radio("Units", view.UNITS, horizontal=True, key="ex_units"))
    summary = explain.day_summary(explanation, day)
    for col, card in zip(st.columns(3), view.day_cards(summary)):
        col.metric(**card)
    steps = explain.waterfall_steps(explanation, day, units=units)
    st.plotly_chart(shap_waterfall_figure(steps, *view.waterfall_args(summary, units)), key="ex_waterfall")
    if units == "price":
        st.caption(view.PRICE_STEPS_NOTE)
    lime_key = (model_id, f"{day:%Y-%m-%d}")  # the result stays while other widgets change, until model or day does
    if st.button("Explain this day with LIME", key="ex_lime"):
        try:
            with st.spinner(view.LIME_SPINNER):
                st.session_state["ex_lime_result"] = (lime_key, explain.lime_explanation(model_id, explanation, day))
        except ERRORS as exc:
            st.error(escape_markdown(str(exc)))
    stored = st.session_state.get("ex_lime_result")
    if stored and stored[0] == lime_key:
        st.plotly_chart(lime_weights_figure(stored[1]["weights"]), key="ex_lime_chart")
        st.caption(view.lime_caption(stored[1]))

with tab_dependence:
    ranked = list(explain.global_importance(values).index)
    d1, d2 = st.columns(2)
    feature = d1.selectbox("Feature", ranked, key="ex_feature")
    partner = explain.interaction_partner(values, X, feature)
    colour_choice = d2.selectbox("Colour by", view.colour_options(ranked, feature, partner), key="ex_colour")
    colour = view.colour_feature(colour_choice, partner)
    shown, j = X.iloc[rows], values.feature_names.index(feature)
    st.plotly_chart(shap_dependence_figure(shown[feature].to_numpy(), values.values[rows, j], shown[colour].to_numpy(),
                                           feature, colour), key="ex_dependence")
    if sampled_note:
        st.caption(sampled_note)

with tab_compare:
    others, other_index = view.compare_options(candidates, model_id)
    if not others:
        st.info(f"{escape_markdown(symbol)} has no other model with features to compare with.")
    else:
        other = st.selectbox("Compare with", others, index=other_index, key="ex_other")
        try:
            with st.spinner(f"SHAP values of {other}…"):
                other_values = cached_explanation(other, sha[other], start, end).shap
                table = explain.compare_importance(other_values, values, (other, model_id))
            st.plotly_chart(importance_compare_figure(table, other, model_id), key="ex_compare_chart")
            columns = {c: st.column_config.NumberColumn(**kw) for c, kw in view.compare_columns(other, model_id).items()}
            st.dataframe(table, hide_index=True, column_config=columns)
        except ERRORS as exc:
            st.error(str(exc))
