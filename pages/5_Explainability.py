"""Explainability: why a model predicts what it does (SHAP global, one day, dependence, versions compared, LIME).
Opens on what registration stored (the window, its SHAP values, importance): nothing heavy on load."""
import pandas as pd
import streamlit as st

from core import explain, explain_local, explain_store, registry
from core import explain_view as view
from core.explain_charts import (importance_bar_figure, importance_compare_figure, lime_weights_figure, shap_beeswarm_figure,
                                 shap_dependence_figure, shap_waterfall_figure)
from core.store import page_guard
from core.text import escape_markdown

st.set_page_config(page_title="Explainability · ML Stock Agent", page_icon="🔍", layout="wide")
st.title("🔍 Explainability")


@st.cache_data(show_spinner=False)
def cached_explanation(model_id: str, artifact_sha256: str, start: str, end: str) -> explain.Explanation:
    """Keyed by the artifact's hash too, so a model id reused by another registry never hits a stale entry."""
    return explain.explain_window(model_id, start=start, end=end)


@st.cache_data(show_spinner=False)
def cached_permutation(model_id: str, artifact_sha256: str, start: str, end: str) -> tuple[pd.DataFrame | None, str | None]:
    return explain.window_permutation(model_id, cached_explanation(model_id, artifact_sha256, start, end))


@st.cache_data(show_spinner=False)
def cached_stored(model_id: str, artifact_sha256: str, stamp: tuple) -> tuple[explain.Explanation | None, dict | None]:
    return explain_store.stored_explanation(model_id), explain_store.stored_importance(model_id)


trading_days = st.cache_data(show_spinner=False)(view.trading_days)

with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    models = registry.list_models()  # price and direction models
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
model_id = c_model.selectbox("Model", ids, index=model_index, key="ex_model", format_func=view.model_labels(candidates).get)
st.query_params.update({"ticker": symbol, "model": model_id})  # the URL follows the selection, so it can be shared
sha = {i: m["artifact_sha256"] for i, m in candidates.items()}
kind = view.KINDS[kind_name := view.kind(candidates[model_id])]
with page_guard(st.error, st.stop):
    stored, document = cached_stored(model_id, sha[model_id], explain_store.stored_stamp(model_id))  # files only
picked = c_range.date_input("Date range", **view.range_bounds(days, stored), key=f"ex_range_{model_id}")  # per model
if not isinstance(picked, tuple) or len(picked) != 2:
    st.info("Pick the end of the date range.")
    st.stop()
start, end = (f"{d:%Y-%m-%d}" for d in picked)

if files := explain.artifact_files(model_id):
    for col, (name, path) in zip(st.columns(len(files)), files.items()):
        col.download_button(f"⬇ {path.name}", path.read_bytes(), f"{model_id}_{path.name}", key=f"ex_dl_{name}")
if candidates[model_id]["model_type"] == "naive":
    st.info(view.NAIVE_NOTE)
    st.stop()

use_stored = stored is not None and picked == view.stored_range(stored)
if use_stored:
    explanation, (permutation, permutation_error) = stored, view.stored_permutation(document)
else:
    if stored is None and not st.checkbox(f"Compute SHAP values for {start} to {end}", key=f"ex_compute_{model_id}"):
        st.info(view.MISSING_NOTE)
        st.stop()
    with st.spinner(view.shap_progress(model_id, start, end)), page_guard(st.error, st.stop):
        try:
            explanation = cached_explanation(model_id, sha[model_id], start, end)
        except view.ERRORS as exc:
            st.error(escape_markdown(exc))
            st.stop()
        permutation, permutation_error = cached_permutation(model_id, sha[model_id], start, end)
values, X = explanation.shap, explanation.X
rows, sampled_note = explain.summary_rows(explanation)
st.caption(kind["caption"] + " " + view.window_caption(model_id, len(explanation.frame), start, end, use_stored,
                                                            candidates[model_id]["train_end"]))
if sampled_note:
    st.caption(sampled_note)

tab_global, tab_local, tab_dependence, tab_compare = st.tabs(["Global", "Local", "Dependence", "Compare"])
with tab_global:
    g1, g2 = st.columns([3, 2])
    g1.plotly_chart(shap_beeswarm_figure(values.values[rows], X.iloc[rows], values.feature_names, title="SHAP summary",
                                         units=kind["shap_units"]), key="ex_beeswarm")
    g2.plotly_chart(importance_bar_figure(explain.global_importance(values), "Mean |SHAP|", kind["bar_units"]), key="ex_bar")
    if permutation is None:
        st.warning(escape_markdown(f"Permutation importance: {permutation_error}"))
    else:
        st.plotly_chart(importance_bar_figure(permutation["permutation_mean"], "Permutation importance on this window",
                                              kind["permutation_axis"], error=permutation["permutation_std"]),
                        key="ex_permutation")

with tab_local:
    l1, l2 = st.columns([2, 1])
    day = l1.selectbox("Day", list(reversed(explanation.frame.index)), format_func=lambda d: f"{d:%Y-%m-%d}", key="ex_day")
    units = view.waterfall_units(l2.radio("Units", kind["units"], horizontal=True, key=f"ex_units_{kind_name}"))
    summary = explain_local.day_summary(explanation, day)
    for col, card in zip(st.columns(len(cards := view.day_cards(summary))), cards):
        col.metric(**card)
    st.plotly_chart(shap_waterfall_figure(explain_local.waterfall_steps(explanation, day, units=units),
                                          *view.waterfall_args(summary, units)), key="ex_waterfall")
    if note := view.steps_note(units):
        st.caption(note)
    lime_key = (model_id, f"{day:%Y-%m-%d}")  # the result stays while other widgets change, until model or day does
    try:
        if st.button("Explain this day with LIME", key="ex_lime"):
            with st.spinner(view.LIME_SPINNER):
                st.session_state["ex_lime_result"] = (lime_key, explain_local.lime_explanation(model_id, explanation, day))
    except view.ERRORS as exc:
        st.error(escape_markdown(str(exc)))
    if (stored_lime := st.session_state.get("ex_lime_result")) and stored_lime[0] == lime_key:
        st.plotly_chart(lime_weights_figure(stored_lime[1]["weights"], kind["lime_axis"]), key="ex_lime_chart")
        st.caption(view.lime_caption(stored_lime[1]))

with tab_dependence:
    ranked = list(explain.global_importance(values).index)
    d1, d2 = st.columns(2)
    feature = d1.selectbox("Feature", ranked, key="ex_feature")
    partner = explain.dependence_partner(explanation, feature)
    colour = view.colour_feature(d2.selectbox("Colour by", view.colour_options(ranked, feature, partner), key="ex_colour"),
                                 partner)
    shown, j = X.iloc[rows], values.feature_names.index(feature)
    st.plotly_chart(shap_dependence_figure(shown[feature].to_numpy(), values.values[rows, j], shown[colour].to_numpy(),
                                           feature, colour), key="ex_dependence")

with tab_compare:
    others, other_index = view.compare_options(candidates, model_id)
    if not others:
        st.info(f"{escape_markdown(symbol)} has no other model of this kind with features to compare with.")
    else:
        other = st.selectbox("Compare with", others, index=other_index, key="ex_other")
        try:
            with st.spinner(f"SHAP values of {other}…"):  # stored windows: files only; a picked range: computed once
                other_values = (cached_stored(other, sha[other], explain_store.stored_stamp(other))[0] if use_stored
                                else cached_explanation(other, sha[other], start, end))
            table = explain.compare_importance(view.compared(other_values, other).shap, values, (other, model_id))
            st.caption(view.compare_caption(use_stored, kind["compare_units"]))
            st.plotly_chart(importance_compare_figure(table, other, model_id, units=kind["compare_units"]),
                            key="ex_compare_chart")
            columns = {c: st.column_config.NumberColumn(**kw) for c, kw in view.compare_columns(other, model_id).items()}
            st.dataframe(table, hide_index=True, column_config=columns)
        except view.ERRORS as exc:
            st.error(escape_markdown(str(exc)))
