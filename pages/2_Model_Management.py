"""Model Management: the registry; one model's details, certification, drift, retraining and artifacts;
deploy and rollback (each with a confirmation)."""
import json

import streamlit as st

from core import drift, drift_kernels, lifecycle, model_view, registry, retrain_jobs
from core.certification import checklist, stored_certification
from core.charts import validation_figure
from core.explain import ExplainError, artifact_files
from core.market import available_symbols, last_trading_day
from core.model_card import write_model_artifacts
from core.registry import ModelIntegrityError, RegistryError
from core.retrain_jobs import RetrainError
from core.store import action_guard, audit_entries, page_guard
from core.store_faults import describe_error
from core.text import escape_markdown

RETRAIN_ERRORS = (RetrainError, RegistryError, ModelIntegrityError)
st.set_page_config(page_title="Model Management · ML Stock Agent", page_icon="🗂️", layout="wide")
st.title("🗂️ Model Management")
with page_guard(st.error, st.stop):  # a busy, read-only or damaged database: one clear message, no trace
    repaired_items = retrain_jobs.reconcile()  # retrain jobs whose process died, model folders a kill left behind
    symbols = ["All", *available_symbols()]
for repaired in repaired_items:
    st.warning(escape_markdown(repaired))
if "mm_linked" not in st.session_state:  # first run: a deep link ?model=<id> selects its model, once
    st.session_state.update(model_view.deep_link_state(st.query_params.get("model", "")))
col_symbol, col_status = st.columns(2)
symbol = col_symbol.selectbox("Ticker", symbols, key="mm_symbol")
status = col_status.selectbox("Status", ["All", *registry.STATUSES], key="mm_status")
with page_guard(st.error, st.stop):
    table = model_view.models_table(None if symbol == "All" else symbol, None if status == "All" else status)
if table.empty:
    st.info("No models match. Train one on the Forecast page.")
    st.stop()
formats = {c: st.column_config.NumberColumn(format=f, help=h) for c, (f, h) in model_view.TABLE_FORMATS.items()}
st.dataframe(table, hide_index=True, column_config=formats)

model_ids = table["model_id"].tolist()
deployed_ids = table.loc[table["status"] == "deployed", "model_id"].tolist()
model_id = st.selectbox("Model", model_ids, index=model_ids.index(deployed_ids[0]) if deployed_ids else 0, key="mm_model")
model = registry.get_model(model_id)
ticker = model["symbol"]
st.query_params["model"] = model_id  # the URL names what is shown, so it can be shared
st.subheader(f"{model_id}")
for column, card in zip(st.columns(4), model_view.headline(model)):
    column.metric(**card)
if warning := model_view.skill_warning(model):
    st.warning(warning)

# --- actions: deploy / rollback with a confirmation step -----------------------------------------------
pending = st.session_state.get("mm_pending")
a1, a2, a3, _ = st.columns([1, 1, 1, 2])
if a1.button("Deploy", disabled=model["status"] == "deployed", key="mm_deploy"):
    st.session_state["mm_pending"] = pending = {"action": "deploy", "model_id": model_id}
back_to = registry.rollback_candidate(ticker)
if a2.button(f"Roll back {ticker}", key="mm_rollback", disabled=back_to is None,
             help=model_view.rollback_help(ticker, back_to)):
    st.session_state["mm_pending"] = pending = {"action": "rollback", "symbol": ticker}
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
                try:
                    st.session_state["mm_flash"] = lifecycle.confirm_action(pending, override, override_reason, actor="ui")
                    st.session_state.pop("mm_pending", None)  # done; on an error the panel stays open with it
                except (RegistryError, ModelIntegrityError) as exc:
                    st.session_state["mm_flash_error"] = str(exc)
            st.rerun()
        if b2.button("Cancel", key="mm_cancel"):
            st.session_state.pop("mm_pending", None)
            st.rerun()
for kind in ("success", "error"):
    if flash := st.session_state.pop("mm_flash" if kind == "success" else "mm_flash_error", None):
        getattr(st, kind)(escape_markdown(flash))

# --- drift: the verdict inline ----------------------------------------------------------------------------
if a3.button("Check for Drift", key="mm_drift_check",
             help="Training window vs the last trading days; stored in the history"):
    with action_guard(st.error):
        try:
            with st.spinner(f"Checking {model_id} for drift..."):
                st.session_state["mm_drift_report"] = drift.check_model(model_id).to_dict()
        except (drift_kernels.DriftInputError, RegistryError, ModelIntegrityError, ValueError) as exc:
            st.session_state.pop("mm_drift_report", None)
            st.error(f"{exc} This button checks the last trading day; the Drift page lets you pick the date.")
if (drift_data := st.session_state.get("mm_drift_report")) and drift_data["model_id"] == model_id:
    verdict = model_view.drift_verdict(drift_data)
    with st.container(border=True):
        st.markdown(verdict["heading"])
        (st.error if verdict["retrain"] else st.success)(verdict["verdict"])
        st.markdown(verdict["reasons"])
        st.caption("Details, distributions and history on the Drift page.")

# --- one model: details, certification, drift, retraining, artifacts, history ----------------------------
tab_detail, tab_cert, tab_retrain, tab_validation, tab_lineage, tab_artifacts, tab_audit = st.tabs(
    ["Details", "Certification", "Retraining", "Validation", "Lineage", "Artifacts", "Audit log"],
    default="Retraining" if st.query_params.get("action") == "retrain" else None)  # Drift's "Retrain Now" link
with tab_cert:
    st.subheader("Certification: " + ("✅ certified" if model["certified"] else "❌ not certified"))
    if certification := stored_certification(model):
        st.caption(model_view.certification_caption(certification))
        st.dataframe(checklist(certification), hide_index=True)
    else:
        st.info(model_view.NO_CERTIFICATION)
    with st.form("mm_cert_form"):
        run_certification = st.form_submit_button("Recompute certification" if certification else "Run certification")
    if run_certification:
        cert_bar = st.progress(0.0, text="Starting the certification")
        with action_guard(lambda message: (cert_bar.empty(), st.error(message))):
            try:
                result = lifecycle.certify_with_card(
                    model_id, progress=lambda fraction, message: cert_bar.progress(min(fraction, 1.0), text=message))
            except (ValueError, RegistryError) as exc:
                st.error(f"Certification failed to run: {exc}")
            else:
                verdict = "certified" if result.certified else "not certified"
                st.session_state["mm_flash"] = f"{model_id}: {verdict} ({result.seconds:.1f} s)."
                st.rerun()

with tab_retrain:
    st.caption(f"Retrain the deployed {ticker} model now; the challenger must pass the validation gate to replace it.")
    with st.form("mm_retrain_form"):  # the date is per ticker: its own last day
        as_of = st.date_input("Train the challenger on data up to", last_trading_day(ticker).date(),
                              key=f"mm_retrain_as_of_{ticker}")
        retrain_clicked = st.form_submit_button("Retrain Now", type="primary")
    if retrain_clicked:
        with st.status(f"Retraining the deployed {ticker} model…", expanded=True) as box, \
                action_guard(lambda message: (box.update(label=model_view.RETRAIN_STOPPED, state="error"),
                                              st.error(message))):
            try:
                outcome = lifecycle.retrain_now(ticker, as_of, actor="ui", progress=lambda _f, text: box.write(text))
                st.session_state["mm_retrain_result"] = lifecycle.retrain_summary(ticker, outcome)
                st.rerun()  # the models table above must show the challenger
            except RETRAIN_ERRORS as exc:
                box.update(label=model_view.RETRAIN_FAILED, state="error")
                st.error(escape_markdown(exc))
    if (result := st.session_state.get("mm_retrain_result")) and result["symbol"] == ticker:
        (st.success if result["deployed"] else st.warning)(escape_markdown(result["message"]))
        st.dataframe([result["gate"]], hide_index=True, key="mm_gate_table")
    queue = retrain_jobs.approval_queue()
    if queue.empty:
        st.caption("Approval queue: empty (automatic retrains on critical drift wait here for a person).")
    else:
        st.dataframe(queue, hide_index=True, key="mm_queue")
        with st.form("mm_approval_form"):
            job_id = st.selectbox("Job", queue["id"].tolist(), key="mm_queue_job")
            q1, q2 = st.columns(2)
            approve_clicked = q1.form_submit_button("Approve and retrain", type="primary")
            decline_clicked = q2.form_submit_button("Decline")
        for retry_id in queue.loc[queue["status"] == "interrupted", "id"].tolist():  # approved, then its process died
            if st.button(f"Retry job {retry_id}", key=f"mm_retry_{retry_id}",
                         help="Its retrain was interrupted; run it again"):
                approve_clicked, job_id = True, retry_id
        if approve_clicked or decline_clicked:
            with action_guard(st.error):
                try:
                    with st.spinner(f"Retraining for job {job_id}…" if approve_clicked else f"Declining job {job_id}…"):
                        decision = lifecycle.decide_job(int(job_id), approved=approve_clicked, actor="ui")
                    st.success(f"Job {job_id}: {decision}")
                except RETRAIN_ERRORS as exc:
                    st.error(str(exc))
    st.caption(f"Recent retrain jobs for {ticker}")
    st.dataframe(retrain_jobs.jobs_frame(symbol=ticker, limit=10), hide_index=True, key="mm_jobs")

with tab_artifacts:
    artifacts = artifact_files(model_id)
    for column, (name, path) in zip(st.columns(max(1, len(artifacts))), artifacts.items()):
        column.download_button(f"⬇ {path.name}", path.read_bytes(), f"{model_id}_{path.name}", key=f"mm_art_{name}")
    st.caption(model_view.artifacts_caption(bool(artifacts)))
    if st.button("Write artifacts again" if artifacts else "Write artifacts", key="mm_art_write"):
        with action_guard(st.error):
            try:
                with st.spinner("Computing SHAP and permutation importance, writing the model card…"):
                    write_model_artifacts(model_id, refresh=True)
                st.rerun()
            except (ExplainError, RegistryError, ModelIntegrityError, OSError) as exc:
                st.error(f"The artifacts could not be written: {describe_error(exc) or exc}")

with tab_detail:
    st.dataframe(model_view.model_facts(model), hide_index=True, key="mm_facts")
    metrics_json = json.dumps(model["metrics"], indent=2)
    st.download_button("Download metrics (JSON)", metrics_json, f"{model_id}_metrics.json", "application/json",
                       key="mm_metrics_json")
with tab_validation:
    try:
        st.plotly_chart(validation_figure(registry.validation_predictions(model_id)), key="mm_validation_chart")
    except ModelIntegrityError as exc:
        st.error(str(exc))
with tab_lineage:
    st.dataframe(model_view.family_table(model_id), hide_index=True, key="mm_family")
with tab_audit:
    st.dataframe(audit_entries(target=model_id), hide_index=True)
