"""Model Management: the registry; one model's details, certification, drift, retraining, artifacts, deploy, rollback."""
import streamlit as st

from core import lifecycle, loop_view, model_view, registry, retrain_jobs, runbook
from core.certification import checklist, stored_certification
from core.explain import artifact_files
from core.market import available_symbols, last_trading_day
from core.metrics import one_sided_warning
from core.store import action_guard, page_guard
from core.text import escape_markdown

st.set_page_config(page_title="Model Management · ML Stock Agent", page_icon="🗂️", layout="wide")
st.title("🗂️ Model Management")
with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    repaired_items = retrain_jobs.reconcile()  # retrain jobs whose process died, model folders a kill left behind
    symbols = ["All", *available_symbols()]
for repaired in repaired_items:
    st.warning(escape_markdown(repaired))
st.session_state.update(model_view.deep_link_state(  # ?model=<id> or ?ticker=<symbol>, on the first run only
    st.query_params.get("model", ""), st.session_state, ticker=st.query_params.get("ticker", ""), symbols=symbols))
col_symbol, col_status = st.columns(2)
symbol = col_symbol.selectbox("Ticker", symbols, key="mm_symbol")
status = col_status.selectbox("Status", ["All", *registry.STATUSES], key="mm_status")
with page_guard(st.error, st.stop):
    table = model_view.models_table(None if symbol == "All" else symbol, None if status == "All" else status)
if table.empty:
    st.info("No models match. Train one on the Forecast page.")
    st.stop()
st.dataframe(table, hide_index=True, column_config=model_view.number_columns(st.column_config.NumberColumn))
choices = table["model_id"].tolist()
if st.session_state.get("mm_model") not in choices:  # first run, or the filters left the chosen model out
    st.session_state["mm_model"] = choices[model_view.default_model_index(table)]
model_id = st.selectbox("Model", choices, key="mm_model")
model = registry.get_model(model_id)
ticker, kind = model["symbol"], registry.model_kind(model["model_type"])  # price / direction: deployed apart
st.query_params["model"] = model_id  # the URL names what is shown, so it can be shared
st.subheader(f"{model_id}")
for column, card in zip(st.columns(4), model_view.headline(model)):
    column.metric(**card)
if warning := model_view.skill_warning(model):
    st.warning(warning)
with page_guard(st.error, st.stop):
    if one_sided := one_sided_warning(model_id):  # a direction model that called the same side every served day
        st.warning(escape_markdown(one_sided))
pending = st.session_state.get("mm_pending")  # deploy / rollback wait here for a confirmation
a1, a2, a3, _ = st.columns([1, 1, 1, 2])
if a1.button("Deploy", disabled=not model_view.deployable(model), key="mm_deploy", help=model_view.deploy_help(model)):
    st.session_state["mm_pending"] = pending = {"action": "deploy", "model_id": model_id}
if a2.button(f"Roll back {ticker}", key="mm_rollback", **model_view.rollback_button(ticker, kind=kind)):
    st.session_state["mm_pending"] = pending = {"action": "rollback", "symbol": ticker, "kind": kind}
if pending:
    what, current_id, needs_override = lifecycle.pending_action(pending)
    with st.container(border=True):
        st.markdown(f"Confirm: {what}? Currently deployed: **{current_id}**.")
        override, override_reason = False, ""
        if needs_override:
            st.warning(model_view.OVERRIDE_WARNING)
            override = st.checkbox("Override: deploy without certification", key="mm_override")
            override_reason = st.text_input("Reason for the override", key="mm_override_reason")
        b1, b2 = st.columns([1, 5])
        if b1.button("Confirm", type="primary", key="mm_confirm"):
            # a busy, read-only or full database: its message, and the panel stays open to retry
            with action_guard(lambda message: st.session_state.update(mm_flash_error=message)):
                done, refused = lifecycle.confirm_for_page(pending, override, override_reason)  # refused: the panel stays
                st.session_state.update({"mm_flash": done, "mm_pending": None} if done else {"mm_flash_error": refused})
            st.rerun()
        b2.button("Cancel", key="mm_cancel", on_click=st.session_state.pop, args=("mm_pending", None))
for kind, key in (("success", "mm_flash"), ("warning", "mm_flash_warning"), ("error", "mm_flash_error")):
    if flash := st.session_state.pop(key, None):
        getattr(st, kind)(escape_markdown(flash))
if a3.button("Check for Drift", key="mm_drift_check", help=model_view.DRIFT_CHECK_HELP):
    with action_guard(st.error), st.spinner(f"Checking {model_id} for drift..."):
        st.session_state["mm_drift_report"], drift_error = lifecycle.check_drift_for_page(model_id)
        if drift_error:
            st.error(drift_error)
if (drift_data := st.session_state.get("mm_drift_report")) and drift_data["model_id"] == model_id:
    with st.container(border=True):
        for element, text in model_view.drift_verdict(drift_data):
            getattr(st, element)(text)
tab_detail, tab_cert, tab_retrain, tab_validation, tab_lineage, tab_artifacts, tab_audit = st.tabs(
    model_view.TABS, default=model_view.opening_tab(st.query_params.get("action")))  # Drift's "Retrain Now" link
with tab_cert:
    st.subheader("Certification: " + ("✅ certified" if model["certified"] else "❌ not certified"))
    if certification := stored_certification(model):
        st.caption(model_view.certification_caption(certification))
        st.dataframe(checklist(certification), hide_index=True)
        st.expander(runbook.expander_label("certification")).markdown(runbook.section("certification"))
    else:
        st.info(model_view.NO_CERTIFICATION)
    with st.form("mm_cert_form"):
        run_certification = st.form_submit_button("Recompute certification" if certification else "Run certification")
    if run_certification:
        cert_bar = st.progress(0.0, text="Starting the certification")
        with action_guard(lambda message: (cert_bar.empty(), st.error(message))):
            verdict, cert_error = lifecycle.certify_for_page(model_id, progress=cert_bar.progress)
            if verdict:  # a model that fails certification is news to act on, not a success
                st.session_state["mm_flash" if registry.get_model(model_id)["certified"] else "mm_flash_warning"] = verdict
                st.rerun()
            st.error(cert_error)
with tab_retrain:
    st.caption(f"Retrain the deployed {ticker} model now; the challenger must pass the validation gate to replace it.")
    with st.form("mm_retrain_form"):  # the date is per ticker: its own last day
        as_of = st.date_input("Train the challenger on data up to", last_trading_day(ticker).date(), key=f"mm_retrain_as_of_{ticker}")
        retrain_clicked = st.form_submit_button("Retrain Now", type="primary")
    if retrain_clicked:
        with st.status(f"Retraining the deployed {ticker} model…", expanded=True) as box, action_guard(
                lambda message: (box.update(label=model_view.RETRAIN_STOPPED, state="error"), st.error(message))):
            summary, retrain_error = lifecycle.retrain_for_page(ticker, as_of, progress=lambda _f, text: box.write(text))
            if summary:
                st.session_state["mm_retrain_result"] = summary
                st.rerun()  # the models table above must show the challenger
            box.update(label=model_view.RETRAIN_FAILED, state="error")
            st.error(retrain_error)
    if (result := st.session_state.get("mm_retrain_result")) and result["symbol"] == ticker:
        (st.success if result["deployed"] else st.warning)(escape_markdown(result["message"]))
        st.dataframe([result["gate"]], hide_index=True, key="mm_gate_table",
                     column_config=model_view.gate_columns(st.column_config.NumberColumn))
    queue = retrain_jobs.approval_queue()
    if queue.empty:
        st.caption(model_view.EMPTY_QUEUE)
    else:
        st.dataframe(queue, hide_index=True, key="mm_queue")
        with st.form("mm_approval_form"):
            job_id = st.selectbox("Job", queue["id"].tolist(), key="mm_queue_job")
            q1, q2 = st.columns(2)
            approve_clicked = q1.form_submit_button("Approve and retrain", type="primary")
            decline_clicked = q2.form_submit_button("Decline")
        for retry_id in queue.loc[queue["status"] == "interrupted", "id"].tolist():  # approved, then its process died
            if st.button(f"Retry job {retry_id}", key=f"mm_retry_{retry_id}", help="Its retrain was interrupted; run it again"):
                approve_clicked, job_id = True, retry_id
        if approve_clicked or decline_clicked:
            with action_guard(st.error), st.spinner(model_view.job_spinner(job_id, approve_clicked)):
                decision, job_error = lifecycle.decide_job_for_page(job_id, approved=approve_clicked)
                (st.success if decision else st.error)(decision or job_error)
    st.caption(f"Recent retrain jobs for {ticker}.")
    st.expander(runbook.expander_label("retrain")).markdown(runbook.section("retrain"))  # each job state, what to do
    st.dataframe(retrain_jobs.jobs_frame(symbol=ticker, limit=10), hide_index=True, key="mm_jobs")
with tab_artifacts:
    artifacts = artifact_files(model_id)
    for column, (name, path) in zip(st.columns(max(1, len(artifacts))), artifacts.items()):
        column.download_button(f"⬇ {path.name}", path.read_bytes(), f"{model_id}_{path.name}", key=f"mm_art_{name}")
    st.caption(model_view.artifacts_caption(bool(artifacts)))
    if st.button("Write artifacts again" if artifacts else "Write artifacts", key="mm_art_write"):
        with action_guard(st.error), st.spinner("Computing SHAP and permutation importance, writing the model card…"):
            artifacts_error = lifecycle.write_artifacts_for_page(model_id)
            if not artifacts_error:
                st.rerun()
            st.error(artifacts_error)
tab_detail.dataframe(model_view.model_facts(model), hide_index=True, key="mm_facts")
tab_detail.download_button("Download metrics (JSON)", **model_view.metrics_download(model), key="mm_metrics_json")
with tab_validation:
    figure, validation_error = model_view.validation_chart(model_id)
    if figure is None:
        st.error(validation_error)
    else:
        st.plotly_chart(figure, key="mm_validation_chart")
tab_lineage.dataframe(model_view.family_table(model_id), hide_index=True, key="mm_family")
tab_audit.dataframe(loop_view.model_timeline(model_id), hide_index=True)  # trained, gated, tested, deployed... with evidence
tab_audit.expander(runbook.expander_label("loop")).markdown(runbook.section("loop"))
