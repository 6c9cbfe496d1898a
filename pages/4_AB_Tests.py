"""A/B Tests: set up a test between model versions, watch it fill, read a decision you can trust, deploy the winner.

Experiment names are user text: every message that shows one goes through `escape_markdown`
(flash messages are stored escaped), so a name is never rendered as a link, image or HTML.
"""
import streamlit as st

from core import ab_view as view
from core import ab_validation, abtest, runbook
from core.config import get_settings
from core.market import available_symbols, last_trading_day
from core.store import action_guard, page_guard
from core.text import escape_markdown

st.set_page_config(page_title="A/B Tests · ML Stock Agent", page_icon="⚖️", layout="wide")
st.title("⚖️ A/B Tests")
st.caption(view.DECISION_CAPTION)
st.expander(runbook.expander_label("ab")).markdown(runbook.section("ab"))  # each verdict: what it means, what to do
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
    model_ids = view.arm_model_ids(symbol)
    if not model_ids:
        st.info(f"No model for {symbol} yet: train one on the Forecast page.")
    else:
        # arms outside the form: the A/A label and the default start follow the models as they are picked
        picked = [col.selectbox(view.arm_model_label(i), model_ids, index=min(i, len(model_ids) - 1), key=f"ab_model_{i}")
                  for i, col in enumerate(st.columns(n_arms))]
        if ab_validation.is_aa_test(picked):
            st.info(view.AA_TEST_NOTE)
        with page_guard(st.error, st.stop):
            first_start = ab_validation.default_start(symbol, picked).date()
        with st.form("ab_create"):
            name = st.text_input("Name", key="ab_name", placeholder=f"{symbol}: champion vs challenger")
            shares = [col.slider(f"Arm {view.ARM_NAMES[i]} traffic %", 0, 100, view.default_share(i, n_arms),
                                 key=f"ab_share_{i}")
                      for i, col in enumerate(st.columns(n_arms))]
            f1, f2, f3, f4 = st.columns(4)
            data_end = last_trading_day(symbol).date()
            start = f1.date_input("Start date", first_start, max_value=data_end,
                                  help=view.start_help(symbol, first_start, data_end),
                                  key=f"ab_start_{symbol}_{'_'.join(picked)}")  # re-derived when the arms change
            duration = f2.number_input("Duration (days)", 1, 365, get_settings().ab_default_duration_days, key="ab_duration")
            min_samples = f3.number_input("Min samples per arm", 2, 10_000, get_settings().ab_min_samples, key="ab_min")
            confidence = f4.select_slider("Confidence", [0.90, 0.95, 0.99], get_settings().ab_confidence_level,
                                          key="ab_confidence")
            shadow = st.checkbox(view.SHADOW_LABEL, key="ab_shadow")
            if st.form_submit_button("Create test", type="primary"):
                with action_guard(st.error):  # a busy, read-only or full database: its message, no test created
                    new_id, message = view.create_test(name, symbol, picked, shares, start, duration, min_samples,
                                                       confidence, shadow)
                    if new_id is None:
                        st.error(message)
                    else:
                        st.session_state.update(ab_flash_success=message, ab_test=new_id)  # show the new test below
                        st.rerun()

if experiments.empty:
    st.stop()
# --- one test --------------------------------------------------------------------------------------------
labels = view.test_labels(experiments)
linked = view.linked_test(st.query_params.get("test", ""), list(labels))
if "ab_test" not in st.session_state and linked is not None:
    st.session_state["ab_test"] = linked  # a deep link (?test=3) opens on its test
selected = st.selectbox("Test", list(labels), format_func=labels.get, key="ab_test")
st.query_params["test"] = str(selected)  # the URL follows the selection, so it can be shared
analysis = abtest.analyze(selected)
exp, result = analysis.experiment, analysis.comparison
st.subheader(escape_markdown(f"#{exp['id']} {exp['name']}"))
for col, card in zip(st.columns(4), view.summary_cards(analysis)):
    col.metric(**card)
kind, recommendation, note = view.verdict(analysis)
getattr(st, kind)(recommendation)
if note:
    st.caption(note)

arm_formats = {column: st.column_config.NumberColumn(format=f) for column, f in view.ARM_FORMATS.items()}
st.dataframe(analysis.arms, hide_index=True, column_config=arm_formats)
st.dataframe(abtest.comparisons_frame(result), hide_index=True)
st.caption(view.test_caption(exp, result))

if analysis.observations.empty:
    st.info(view.NO_OBSERVATIONS)
else:
    for col, (key, figure) in zip((*st.columns(2), *st.columns(2)), view.figures(analysis).items()):  # two rows of two
        col.plotly_chart(figure, key=key)

st.download_button("Download results (CSV)", analysis.results_csv, f"ab_test_{exp['id']}.csv", "text/csv",
                   key="ab_csv")  # a callable: the CSV is built when the button is clicked, not on every load

if exp["status"] != "running":
    st.stop()

with st.expander("Replay historical days through the serving path"):
    first_day, last_day, kind, text = view.replay_window(exp)
    getattr(st, kind)(text)
    if kind == "caption":  # there are days to replay
        with st.form(f"ab_replay_{exp['id']}"):  # keyed by test: switching tests starts from that test's dates
            r1, r2 = st.columns(2)
            replay_start = r1.date_input("From", first_day, key=f"ab_replay_start_{exp['id']}")
            replay_end = r2.date_input("To", last_day, key=f"ab_replay_end_{exp['id']}")
            if st.form_submit_button("Replay"):
                with st.status("Replaying...", expanded=False) as status, \
                        action_guard(lambda message: (status.update(label="Replay stopped on a database fault",
                                                                    state="error"), st.error(message))):
                    state, label, message = view.replay_test(exp["id"], replay_start, replay_end)
                    status.update(label=label, state=state)
                    if state == "error":
                        st.error(message)
                    else:
                        st.session_state["ab_flash_success"] = message
                        st.rerun()

action = view.stop_action(analysis)  # deploy only a trustworthy winner; else "Stop test" with the reason
st.caption(action.reason)
if st.button(action.label, type=action.kind, key="ab_stop"):
    st.session_state["ab_pending_stop"] = exp["id"]
if st.session_state.get("ab_pending_stop") == exp["id"]:
    with st.container(border=True):
        st.markdown(view.confirm_text(exp, analysis, action.deploy))
        needs_override = st.session_state.get("ab_needs_override") == exp["id"]
        override = needs_override and st.checkbox(view.OVERRIDE_LABEL, key="ab_override")
        b1, b2 = st.columns([1, 5])
        if b1.button("Confirm", type="primary", key="ab_confirm"):
            # a busy, read-only or full database: its message, the test keeps running and the panel stays open
            with action_guard(lambda message: st.session_state.update(ab_flash_error=escape_markdown(message))):
                kind, message, needs_override = view.stop_test(exp["id"], override, action.deploy)
                st.session_state[f"ab_flash_{kind}"] = message
                if needs_override:
                    st.session_state["ab_needs_override"] = exp["id"]
                else:
                    st.session_state.pop("ab_pending_stop", None)
            st.rerun()
        if b2.button("Cancel", key="ab_cancel"):
            st.session_state.pop("ab_pending_stop", None)
            st.rerun()
