"""A/B Tests: set up a test between model versions, watch it fill, read a decision you can trust, deploy the winner.

Experiment names are user text: every message that shows one goes through `escape_markdown`
(flash messages are stored escaped), so a name is never rendered as a link, image or HTML.
"""
import pandas as pd
import streamlit as st

from core import ab_stats, abtest, registry
from core.ab_stats import ExperimentError
from core.charts import ab_cumulative_mae_figure, ab_error_distribution_figure, ab_sample_counts_figure, ab_significance_figure
from core.config import get_settings
from core.market import MarketDataError, available_symbols, last_trading_day
from core.registry import CertificationRequired, RegistryError
from core.formatting import NOT_ENOUGH, finite, signed_pct
from core.store import action_guard, page_guard
from core.text import escape_markdown

st.set_page_config(page_title="A/B Tests · ML Stock Agent", page_icon="🧪", layout="wide")
st.title("🧪 A/B Tests")
st.caption(f"Decision rule in force: **{ab_stats.DECISION_RULE}**. Welch's / the paired t-test are shown for reference: "
           "they are only valid if you look once, at the planned end.")

for kind in ("success", "error"):  # flash messages are stored already escaped (see the module docstring)
    if message := st.session_state.pop(f"ab_flash_{kind}", None):
        getattr(st, kind)(message)

with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    experiments = abtest.list_experiments()
st.subheader("Tests")
if experiments.empty:
    st.info("No A/B test yet: create one below.")
else:
    st.dataframe(experiments, hide_index=True, column_config={"shadow": st.column_config.CheckboxColumn()})

# --- creation form ---------------------------------------------------------------------------------------
with st.expander("New A/B test", expanded=experiments.empty):
    c1, c2 = st.columns(2)
    symbol = c1.selectbox("Ticker", available_symbols(), key="ab_symbol")
    n_arms = int(c2.number_input("Arms", min_value=2, max_value=4, value=2, key="ab_n_arms"))
    model_ids = [m["model_id"] for m in sorted(registry.list_models(symbol), key=lambda m: m["status"] != "deployed")]
    if not model_ids:
        st.info(f"No model for {symbol} yet: train one on the Forecast page.")
    else:
        # arms outside the form: the A/A label and the default start follow the models as they are picked
        picked = [col.selectbox(f"Arm {'ABCD'[i]} model" + (" (control)" if i == 0 else ""), model_ids,
                                index=min(i, len(model_ids) - 1), key=f"ab_model_{i}")
                  for i, col in enumerate(st.columns(n_arms))]
        if abtest.is_aa_test(picked):
            st.info("**A/A test**: the same model is in more than one arm. It checks the pipeline (routing, logging, "
                    "the sample ratio); no arm can truly win, and a 'winner' would be a false alarm.")
        with page_guard(st.error, st.stop):
            first_start = abtest.default_start(symbol, picked).date()
        with st.form("ab_create"):
            name = st.text_input("Name", key="ab_name", placeholder=f"{symbol}: champion vs challenger")
            arms = []
            for i, col in enumerate(st.columns(n_arms)):
                share = col.slider(f"Arm {'ABCD'[i]} traffic %", 0, 100, 100 // n_arms + (100 % n_arms if i == 0 else 0),
                                   key=f"ab_share_{i}")
                arms.append((picked[i], share))
            f1, f2, f3, f4 = st.columns(4)
            data_end = last_trading_day(symbol).date()
            start = f1.date_input("Start date", first_start, max_value=data_end,
                                  key=f"ab_start_{symbol}_{'_'.join(picked)}",  # re-derived when the arms change
                                  help=f"Default: the first day every arm can be scored on ({first_start}). {symbol}'s "
                                       f"prices end on {data_end}: a test must start before that to collect data.")
            duration = f2.number_input("Duration (days)", 1, 365, 60, key="ab_duration")
            min_samples = f3.number_input("Min samples per arm", 2, 10_000, get_settings().ab_min_samples, key="ab_min")
            confidence = f4.select_slider("Confidence", [0.90, 0.95, 0.99], get_settings().ab_confidence_level,
                                          key="ab_confidence")
            shadow = st.checkbox("Shadow mode (every arm predicts every request; only the routed arm is served)",
                                 key="ab_shadow")
            if st.form_submit_button("Create test", type="primary"):
                total = sum(share for _, share in arms)
                if total != 100:
                    st.error(f"The traffic split must sum to 100 %, it sums to {total} %.")
                else:
                    with action_guard(st.error):  # a busy, read-only or full database: its message, no test created
                        try:
                            new_id = abtest.create_experiment(name, symbol, [(m, s / 100) for m, s in arms], start,
                                                              int(duration), int(min_samples), float(confidence),
                                                              shadow=shadow, actor="ui")
                            st.session_state["ab_flash_success"] = escape_markdown(f"Test #{new_id} '{name}' started on {symbol}.")
                            st.session_state["ab_test"] = new_id  # show the new test below
                            st.rerun()
                        except ExperimentError as exc:
                            st.error(escape_markdown(str(exc)))

if experiments.empty:
    st.stop()

# --- one test --------------------------------------------------------------------------------------------
labels = {int(r.id): f"#{r.id} {r.name} · {r.symbol} · {r.status}" for r in experiments.itertuples()}
ids = list(labels)
if "ab_test" not in st.session_state and (linked := st.query_params.get("test", "")).isdigit() and int(linked) in ids:
    st.session_state["ab_test"] = int(linked)  # a deep link (?test=3) opens on its test
selected = st.selectbox("Test", ids, format_func=labels.get, key="ab_test")
st.query_params["test"] = str(selected)  # the URL follows the selection, so it can be shared
analysis = abtest.analyze(selected)
exp, result = analysis.experiment, analysis.comparison
st.subheader(escape_markdown(f"#{exp['id']} {exp['name']}"))
m1, m2, m3, m4 = st.columns(4)
m1.metric("Status", exp["status"], f"{exp['start_date']} → {exp['end_date']}", delta_color="off", delta_arrow="off")
m2.metric("Winner", f"arm {analysis.winner}" if analysis.winner else "none yet",
          analysis.winner_model_id or ("significant" if analysis.significant else "not significant"), delta_color="off", delta_arrow="off")
m3.metric("Improvement", signed_pct(abs(analysis.improvement_pct)) if finite(analysis.improvement_pct) else NOT_ENOUGH,
          abtest.improvement_text(result, exp["metric"]), delta_color="off", delta_arrow="off")
m4.metric("Sample ratio", "MISMATCH" if result.srm_flag else "OK",
          f"chi-square p = {result.srm_p:.3g}" if result.srm_p is not None else "no traffic yet",
          delta_color="red" if result.srm_flag else "off", delta_arrow="off")
winner_row = registry.get_model(analysis.winner_model_id) if analysis.winner_model_id else None
green = analysis.significant and not result.srm_flag and winner_row is not None and bool(winner_row["certified"])
(st.warning if result.srm_flag else st.success if green else st.info)(escape_markdown(analysis.recommendation))
if winner_row is not None and not winner_row["certified"]:
    st.caption(escape_markdown(f"{analysis.winner_model_id} is not certified: deploying it needs an override "
                               "(Model Management runs the five checks)."))

st.dataframe(analysis.arms, hide_index=True, column_config={
    "MAE $": st.column_config.NumberColumn(format="$%.3f"), "RMSE $": st.column_config.NumberColumn(format="$%.3f"),
    "MAPE %": st.column_config.NumberColumn(format="%.2f%%"), "direction %": st.column_config.NumberColumn(format="%.1f%%"),
    "share %": st.column_config.NumberColumn(format="%.0f%%")})
st.dataframe(abtest.comparisons_frame(result), hide_index=True)
st.caption(f"Test: {'paired t-test on shared requests (shadow mode)' if exp['shadow'] else 'Welch t-test (independent arms)'} "
           f"· alpha per comparison {result.alpha_per_comparison:.3g} (Bonferroni over {len(result.comparisons)}) "
           f"· difference = challenger − control in {exp['metric'].upper()} (negative: the challenger errs less) "
           "· always-valid interval = the confidence sequence of that difference, safe to read at every look")

if analysis.observations.empty:
    st.info("No predictions with known outcomes yet: they appear as the serving path answers requests (or replay below).")
else:
    g1, g2 = st.columns(2)
    g1.plotly_chart(ab_cumulative_mae_figure(analysis.observations), key="ab_cumulative")
    g2.plotly_chart(ab_significance_figure(analysis.track, result.alpha_per_comparison), key="ab_significance")
    g3, g4 = st.columns(2)
    g3.plotly_chart(ab_error_distribution_figure(analysis.observations), key="ab_errors")
    g4.plotly_chart(ab_sample_counts_figure(analysis.arms, exp["min_samples"]), key="ab_counts")

st.download_button("Download results (CSV)", analysis.results_csv(), f"ab_test_{exp['id']}.csv", "text/csv", key="ab_csv")

if exp["status"] != "running":
    st.stop()

# --- replay and stop -------------------------------------------------------------------------------------
with st.expander("Replay historical days through the serving path"):
    try:
        first_day, last_day = (pd.Timestamp(d).date() for d in abtest.replay_bounds(exp))
    except (MarketDataError, RegistryError) as exc:
        st.error(escape_markdown(f"Cannot replay this test: {exc}"))
        first_day = last_day = None
    if first_day is not None and first_day > last_day:
        st.info(f"Nothing to replay: the arms are trained up to {first_day}, after the last day this test can cover ({last_day}).")
    elif first_day is not None:
        st.caption(f"Days this test can replay: {first_day} to {last_day} (inside the test's dates, none inside an arm's "
                   "training window). A day already served is not logged again.")
        with st.form(f"ab_replay_{exp['id']}"):  # keyed by test: switching tests starts from that test's dates
            r1, r2 = st.columns(2)
            replay_start = r1.date_input("From", first_day, key=f"ab_replay_start_{exp['id']}")
            replay_end = r2.date_input("To", last_day, key=f"ab_replay_end_{exp['id']}")
            if st.form_submit_button("Replay"):
                with st.status("Replaying...", expanded=False) as status, \
                        action_guard(lambda message: (status.update(label="Replay stopped on a database fault", state="error"),
                                                      st.error(message))):
                    try:
                        days = abtest.simulate(exp["id"], replay_start, replay_end)
                        status.update(label=f"Logged {days} new trading days", state="complete")
                        st.session_state["ab_flash_success"] = escape_markdown(
                            f"Replayed {replay_start} to {replay_end}: {days} new trading days logged; days already "
                            "served were not logged again.")
                        st.rerun()
                    except (ExperimentError, MarketDataError, RegistryError) as exc:
                        status.update(label="Replay refused", state="error")
                        st.error(escape_markdown(str(exc)))

if st.button("Stop and deploy winner", type="primary", key="ab_stop"):
    st.session_state["ab_pending_stop"] = exp["id"]
if st.session_state.get("ab_pending_stop") == exp["id"]:
    with st.container(border=True):
        target = (f"deploy arm {analysis.winner} (**{escape_markdown(analysis.winner_model_id)}**)" if analysis.winner_model_id
                  else "deploy nothing (no winner)")
        st.markdown(f"Confirm: stop **{escape_markdown(exp['name'])}** and {target}?")
        override = False
        if st.session_state.get("ab_needs_override") == exp["id"]:
            override = st.checkbox("Deploy the uncertified winner anyway (override, recorded in the audit log)", key="ab_override")
        b1, b2 = st.columns([1, 5])
        if b1.button("Confirm", type="primary", key="ab_confirm"):
            # a busy, read-only or full database: its message, the test keeps running and the panel stays open
            with action_guard(lambda message: st.session_state.update(ab_flash_error=escape_markdown(message))):
                try:
                    done = abtest.stop(exp["id"], deploy_winner=True, actor="ui", override=override)
                    st.session_state["ab_flash_success"] = escape_markdown(
                        f"Stopped. Deployed {done['deployed']}." if done["deployed"]
                        else f"Stopped. Nothing deployed. {done['recommendation']}")
                    st.session_state.pop("ab_pending_stop", None)
                except CertificationRequired as exc:
                    st.session_state["ab_needs_override"] = exp["id"]
                    st.session_state["ab_flash_error"] = escape_markdown(f"{exc} Tick the override box to deploy it anyway.")
                except (ExperimentError, RegistryError) as exc:
                    st.session_state["ab_flash_error"] = escape_markdown(str(exc))
                    st.session_state.pop("ab_pending_stop", None)
            st.rerun()
        if b2.button("Cancel", key="ab_cancel"):
            st.session_state.pop("ab_pending_stop", None)
            st.rerun()
