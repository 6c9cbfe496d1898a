"""Monitoring: volume, latency, error rate, intervals, rolling accuracy vs naive, model health by regime, PSI, alerts, retrain jobs."""
import streamlit as st

from core import alerts, charts, direction_view, health_charts, retrain_jobs, runbook
from core.config import get_settings
from core.cycle import cycle_history, last_cycle_run
from core.health_view import default_model, display_table, model_health_view, skill_card
from core.metrics import (WIDTH_WINDOW_DAYS, metrics_frame, monitored_models, one_sided_warning, psi_history,
                          recent_interval_widths)
from core.store import page_guard
from core.text import escape_markdown

st.set_page_config(page_title="Monitoring · ML Stock Agent", page_icon="📊", layout="wide")
st.title("📊 Monitoring")


@st.cache_data(ttl=30)
def load_metrics(symbol: str | None):
    return metrics_frame(symbol=symbol)


with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    monitored = monitored_models()  # which models have metrics; the metrics of the chosen ticker are read below
    last = last_cycle_run()
if last is None:
    st.caption("The daily cycle has not run yet: `python scheduled_tasks.py --once` (see README).")
else:
    status = "succeeded" if last["succeeded"] else f"{last['failed']} model(s) failed"
    st.caption(f"Last daily cycle: as of **{last['as_of']}**, run at {last['at'][:16].replace('T', ' ')} UTC, "
               f"{last['ok']} ok, {status}, {last['seconds']:.1f} s.")
if monitored.empty:
    st.info("No daily metrics yet. Build the demo (`python -m core.demo`) or run the scheduler (`python scheduled_tasks.py --replay START END`).")
    st.stop()

c1, c2 = st.columns(2)
tickers = sorted(monitored["symbol"].unique())
# one ticker first: the bundled tickers' histories end years apart, so "All" spreads over an empty axis
link = {"ticker": (st.query_params.get("ticker") or "").upper(), "model": st.query_params.get("model", "")}
linked_symbol = next(iter(monitored.loc[monitored["model_id"] == link["model"], "symbol"]), link["ticker"])
symbol_options = ["All", *tickers]
symbol = c1.selectbox("Ticker", symbol_options, key="mon_symbol",
                      index=symbol_options.index(linked_symbol) if linked_symbol in symbol_options else 1)
with page_guard(st.error, st.stop): in_scope = load_metrics(None if symbol == "All" else symbol)  # noqa: E701
model_options = ["All", *sorted(in_scope["model_id"].unique())]
model_id = c2.selectbox("Model", model_options, key="mon_model",
                        index=model_options.index(link["model"]) if link["model"] in model_options else 0)
st.query_params.update({"ticker": symbol, "model": model_id})  # the URL follows the selection, so it can be shared
metrics = in_scope if model_id == "All" else in_scope[in_scope["model_id"] == model_id]
symbol_arg, model_arg = (None if symbol == "All" else symbol), (None if model_id == "All" else model_id)

done = metrics.dropna(subset=["mae"])
m1, m2, m3, m4 = st.columns(4)
m1.metric("Predictions", f"{int(metrics['n_predictions'].sum()):,}", f"{metrics['date'].nunique()} days", delta_color="off", delta_arrow="off")
with page_guard(st.error, st.stop):  # the one live skill (core.metrics): Home, Forecast and the alert show it too
    m2.metric(**skill_card(model_arg or default_model(metrics)))
m3.metric("Latency P95 (median day)", f"{metrics['latency_p95'].median():.1f} ms")
with page_guard(st.error, st.stop):
    open_alerts = alerts.alerts_frame(symbol=symbol_arg, model_id=model_arg, unacknowledged_only=True)
m4.metric("Open alerts", len(open_alerts))
with page_guard(st.error, st.stop):
    if one_sided := one_sided_warning(model_arg):  # a direction model that always calls the same side
        st.warning(escape_markdown(one_sided))

tab_traffic, tab_accuracy, tab_health, tab_drift, tab_alerts, tab_retrain = st.tabs(
    ["Traffic & latency", "Accuracy", "Model health", "Drift", "Alerts", "Retrain jobs"])
with tab_traffic:
    if note := charts.empty_figure_note(metrics["date"].nunique(), "days with predictions"):
        st.info(note)
    else:
        st.plotly_chart(charts.prediction_volume_figure(metrics), key="mon_volume")
        latency = metrics.groupby("date", as_index=False)[["latency_p50", "latency_p95", "latency_p99"]].max()
        st.plotly_chart(charts.latency_figure(latency), key="mon_latency")
        if (latency["latency_p50"] == latency["latency_p99"]).mean() > 0.5:
            st.caption("P50, P95 and P99 coincide on most days: with one prediction a day they are the same number "
                       "(drawn as a thick red line under a dashed amber and a dotted green one).")
    history = cycle_history()
    if note := charts.empty_figure_note(len(history), "daily-cycle runs"):
        st.caption(f"Error rate: {note}")
    else:
        st.plotly_chart(charts.error_rate_figure(history), key="mon_error_rate")
    widths = recent_interval_widths(metrics, model_id=model_arg, symbol=symbol_arg)
    if not widths.empty:
        st.plotly_chart(charts.interval_width_figure(widths), key="mon_widths")
        st.caption(f"Interval widths of the served predictions of the last {WIDTH_WINDOW_DAYS} days shown.")
with tab_accuracy:
    for element, kwargs in direction_view.monitoring_elements(metrics, prices_scored=not done.empty):  # P(up) models
        getattr(st, element)(**kwargs)
    if not done.empty:
        window = st.slider("Rolling window (trading days)", 5, 60, 20, key="mon_window")
        for name, group in done.groupby("model_id"):
            if note := charts.empty_figure_note(group["date"].nunique(), "scored days"):
                st.caption(f"{escape_markdown(name)}: {note}")
                continue
            st.plotly_chart(charts.rolling_accuracy_figure(group, window).update_layout(title=f"{name}: rolling accuracy vs naive"),
                            key=f"mon_acc_{name}")
with tab_health:  # where does the model fail: by market regime and by decile of its top SHAP features
    with page_guard(st.error, st.stop):
        health = model_health_view(model_arg or default_model(metrics))
    (st.info if health.note else st.caption)(escape_markdown(health.note or health.caption))
    if not health.note:
        st.plotly_chart(health_charts.regime_figure(health.regimes), key="mon_regimes")
        st.dataframe(display_table(health.regimes), hide_index=True, key="mon_regime_table")
        if health.features_note:
            st.info(escape_markdown(health.features_note))
        else:
            st.plotly_chart(health_charts.feature_decile_figure(health.deciles), key="mon_deciles")
            st.dataframe(display_table(health.deciles), hide_index=True, key="mon_decile_table")
    st.expander(runbook.expander_label("health")).markdown(runbook.section("health"))  # reading it, a weak regime
with tab_drift:
    psi = psi_history(model_id=model_arg, symbol=symbol_arg)
    if psi.empty:
        st.info("No drift checks yet: the daily cycle runs one per deployed model.")
    else:
        settings = get_settings()
        for name, group in psi.groupby("model_id"):
            if note := charts.empty_figure_note(len(group), "drift checks"):
                st.caption(f"{escape_markdown(name)}: {note}")
                continue
            st.plotly_chart(charts.psi_history_figure(group, settings.drift_psi_threshold, settings.drift_psi_moderate)
                            .update_layout(title=f"{name}: PSI over time"), key=f"mon_psi_{name}")
        st.caption("Marker colour = the check's verdict. PSI alone does not decide it: a feature drifts when its PSI "
                   f"reaches {settings.drift_psi_threshold:g}, its KS test is significant, and its PSI is unusual even "
                   "for its own training window (PSI p). Daily rolling features routinely reach PSIs of several units "
                   "in a calm market, so a large PSI can still be green. The Drift page shows each feature's three tests.")
with tab_alerts:
    shown = alerts.alerts_frame(symbol=symbol_arg, model_id=model_arg)
    st.expander(runbook.expander_label("alerts")).markdown(runbook.section("alerts"))  # each kind: its fix
    if shown.empty:
        st.info("No alerts.")
    else:
        st.plotly_chart(charts.alerts_timeline_figure(shown), key="mon_alerts_timeline")
        first = ["severity", "kind", "message", "day", "symbol", "model_id"]  # what happened first, bookkeeping after
        st.dataframe(shown[first + [c for c in shown.columns if c not in first]], hide_index=True, key="mon_alerts_table",
                     column_config={"message": st.column_config.TextColumn(width="large")})
        if not open_alerts.empty:
            with st.form("mon_ack"):
                picked = st.multiselect("Acknowledge", open_alerts["id"].tolist(), key="mon_ack_ids",
                                        format_func=lambda i: f"#{i} " + open_alerts.set_index("id").loc[i, "kind"])
                if st.form_submit_button("Acknowledge selected") and picked:
                    try:
                        with page_guard(st.error, st.stop):
                            for alert_id in picked:
                                alerts.acknowledge(int(alert_id), actor="ui")
                        st.session_state["mon_flash"] = f"Acknowledged {len(picked)} alert(s)."
                    except alerts.AlertError as exc:
                        st.session_state["mon_flash"] = f"error: {exc}"
                    st.rerun()
    if flash := st.session_state.pop("mon_flash", None):
        (st.error if flash.startswith("error:") else st.success)(escape_markdown(flash))
with tab_retrain:
    jobs = retrain_jobs.jobs_frame(symbol=symbol_arg)
    if model_arg:
        jobs = jobs[(jobs["model_id"] == model_arg) | (jobs["challenger_id"] == model_arg)]
    if jobs.empty:
        st.info("No retrain jobs: triggers from drift or degradation and Retrain Now on Model Management appear here.")
    else:
        st.dataframe(jobs, hide_index=True, key="mon_jobs")
