"""SHAP bench: core.explain.shap_values vs shap.TreeExplainer on the same 300-tree depth-6 XGBoost model, 1,000 rows;
and (--page) the Explainability page's first visit and warm load, this code against an earlier commit.

Run: .venv/bin/python bench/shap_bench.py   (self-contained: a temporary registry, offline, bundled AAPL data)
Prints cold / memory-cached / disk-cached times of this module, shap.TreeExplainer's time in the same run and
the ratio, the default-window times of the app's own rf and xgb models, and the per-model cost of the artifacts
written at registration.

Run: .venv/bin/python bench/shap_bench.py --page [--before REV]   (~2-4 min)
Registers AAPL rf + xgb (xgb deployed) and an XGBoost direction model with their artifacts, then times the
Explainability page through AppTest: its first visit in a fresh process (as after a server start; min and
median of 3, and its CPU time) and warm (min of 3 runs after one in the same process), for this worktree and the code of
commit REV (default d9bbe0e, the last one whose page computed SHAP and permutation importance on load),
interleaved, on the same state, with the ratio, and which model libraries each first visit imported. The
earlier code leaves SHAP values in the disk cache on its first visit, so its later first visits are
favoured. No thresholds: speed is reported, not asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
_TMP = tempfile.mkdtemp(prefix="mlsa-shap-bench-")
os.environ.update({"MLSA_OFFLINE": "1", "MLSA_DB_PATH": f"{_TMP}/app.db", "MLSA_MODELS_DIR": f"{_TMP}/models"})

import numpy as np  # noqa: E402

from core import explain, model_card  # noqa: E402
from core.features import FEATURE_COLUMNS  # noqa: E402
from core.lifecycle import register_with_artifacts  # noqa: E402
from core.registry import load_model  # noqa: E402
from core.training import train_model  # noqa: E402

SYMBOL, ROWS, REPEATS = "AAPL", 1000, 5
BENCH_PARAMS = {"n_estimators": 300, "max_depth": 6}
ROOT = Path(__file__).resolve().parent.parent
PAGE = "pages/5_Explainability.py"
PAGE_VISIT = """
import json, sys, time
from streamlit.testing.v1 import AppTest
times = []
for run in range({runs}):
    started, cpu = time.perf_counter(), time.process_time()
    app = AppTest.from_file({home!r}, default_timeout=600).switch_page({page!r})
    app.query_params.update({query!r})
    app.run()
    times.append(time.perf_counter() - started)
    if run == 0:
        first_cpu = time.process_time() - cpu
        heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{"sklearn", "xgboost", "shap", "lime"}})
print(json.dumps({{"times": times, "cpu": first_cpu, "heavy": heavy, "failed": bool(app.exception),
                  "shown": app.selectbox(key="ex_model").value}}))
"""


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def cold_call(model_id: str, X) -> float:
    """shap_values with empty memory and disk caches (the verified model itself stays loaded)."""
    explain.clear_memory_cache()
    for path in explain._cache_dir(model_id).glob("*.npz"):
        path.unlink()
    return timed(lambda: explain.shap_values(model_id, X))[0]


def main() -> None:
    os.environ["MLSA_EXPLAIN_IMAGE_FORMAT"] = "html"  # keep Chromium out of the model set-up; measured below
    print(f"training a {BENCH_PARAMS['n_estimators']}-tree depth-{BENCH_PARAMS['max_depth']} XGBoost on {SYMBOL} ...", flush=True)
    bench_id = register_with_artifacts(train_model(SYMBOL, "xgb", params=BENCH_PARAMS), reason="shap bench")
    X = explain.window_features(SYMBOL, days=ROWS + 1).iloc[:ROWS][FEATURE_COLUMNS]
    estimator = load_model(bench_id).estimator
    leaves = int((estimator.get_booster().trees_to_dataframe()["Feature"] == "Leaf").sum())
    print(f"model {bench_id}: {leaves} leaves in {BENCH_PARAMS['n_estimators']} trees; {len(X)} rows x {X.shape[1]} features")

    import shap

    ours, reference = [], []
    for _ in range(REPEATS):  # interleaved, so load from other processes hits both alike
        ours.append(cold_call(bench_id, X))
        reference.append(timed(lambda: shap.TreeExplainer(estimator).shap_values(X.to_numpy()))[0])
    memory = [timed(lambda: explain.shap_values(bench_id, X))[0] for _ in range(REPEATS)]
    disk = []
    for _ in range(REPEATS):
        explain.clear_memory_cache()
        disk.append(timed(lambda: explain.shap_values(bench_id, X))[0])
    result = explain.shap_values(bench_id, X)
    agreement = np.abs(result.values - shap.TreeExplainer(estimator).shap_values(X.to_numpy())).max()
    additivity = np.abs(result.base_value + result.values.sum(axis=1) - estimator.predict(X.to_numpy())).max()
    print(f"core.explain.shap_values, cold   : best {min(ours):.3f} s, median {statistics.median(ours):.3f} s of {REPEATS} "
          "(XGBoost pred_contribs, exact TreeSHAP; empty caches)")
    print(f"shap.TreeExplainer (same model)  : best {min(reference):.3f} s, median {statistics.median(reference):.3f} s "
          f"of {REPEATS} (explainer built + shap_values)")
    print(f"ratio TreeExplainer / ours       : best {min(reference) / min(ours):.2f}x, "
          f"median {statistics.median(reference) / statistics.median(ours):.2f}x")
    print(f"cached call, memory              : {statistics.median(memory) * 1000:.2f} ms")
    print(f"cached call, disk (.npz)         : {statistics.median(disk) * 1000:.2f} ms")
    print(f"max |ours - TreeExplainer|       : {agreement:.2e}   max |base + sum(SHAP) - XGBRegressor.predict|: {additivity:.2e}")

    print("default window of the app's own models (MLSA_EXPLAIN_WINDOW_DAYS rows, cold):")
    for model_type in ("xgb", "rf"):
        model_id = register_with_artifacts(train_model(SYMBOL, model_type), reason="shap bench")
        rows = explain.model_window(explain.get_model(model_id))
        print(f"  {model_id}: {len(rows)} rows in {statistics.median(cold_call(model_id, rows) for _ in range(REPEATS)):.3f} s")

    os.environ["MLSA_EXPLAIN_IMAGE_FORMAT"] = "png"
    # refresh=True: registration already wrote HTML artifacts above, which a plain call would reuse
    first, _ = timed(lambda: model_card.write_model_artifacts(model_id, refresh=True))
    again, files = timed(lambda: model_card.write_model_artifacts(model_id, refresh=True))
    print(f"artifacts of one model with a PNG summary: {first:.2f} s the first time in a process (starts Chromium), "
          f"{again:.2f} s after; files: {', '.join(sorted(p.name for p in files.values()))}")


def visit(tree: Path, query: dict, runs: int) -> dict:
    """Run the page `runs` times in one fresh process with the code in `tree`; the first run is the first visit."""
    code = PAGE_VISIT.format(runs=runs, home=str(tree / "Home.py"), page=PAGE, query=query)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def page_bench(before: str) -> None:
    from core.direction import train_direction
    from core.registry import deploy

    os.environ["MLSA_EXPLAIN_IMAGE_FORMAT"] = "html"  # Chromium is not what is measured here
    print("registering AAPL rf + xgb and a direction model with their artifacts ...", flush=True)
    register_with_artifacts(train_model(SYMBOL, "rf"), reason="page bench")
    deploy(register_with_artifacts(train_model(SYMBOL, "xgb"), reason="page bench"), reason="page bench", override=True)
    direction_id = register_with_artifacts(train_direction(SYMBOL, "xgb", window_days=600, params={"n_estimators": 40}),
                                           reason="page bench")
    trees = {"this worktree": ROOT}
    old = Path(_TMP) / "before"
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", before], capture_output=True)
    if archive.returncode == 0:
        old.mkdir()
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        trees = {f"before ({before})": old, **trees}
    else:
        print(f"commit {before!r} not found: measuring this worktree only")
    first: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    warm, heavy = {}, {}
    for round_ in range(3):  # interleaved, so load from other processes hits both alike
        for name, tree in trees.items():
            result = visit(tree, {}, runs=4 if round_ == 0 else 1)
            assert not result["failed"], f"{name}: the page failed"
            first[name].append(result["times"][0])
            cpu[name].append(result["cpu"])
            if round_ == 0:
                warm[name], heavy[name] = min(result["times"][1:]), result["heavy"]
    print(f"\nExplainability page, {SYMBOL}'s deployed xgb model (AppTest; first visit = a fresh process; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'code':<28}{'first visit min':>16}{'median':>8}{'CPU min':>9}{'warm min':>10}  model libraries imported")
    for name in trees:
        print(f"{name:<28}{min(first[name]):>15.2f}s{statistics.median(first[name]):>7.2f}s{min(cpu[name]):>8.2f}s"
              f"{warm[name]:>9.2f}s  {', '.join(heavy[name]) or 'none'}")
    if len(trees) == 2:
        (b, a) = trees
        print(f"{'ratio before / after':<28}{min(first[b]) / min(first[a]):>15.1f}x"
              f"{statistics.median(first[b]) / statistics.median(first[a]):>7.1f}x{min(cpu[b]) / min(cpu[a]):>8.1f}x"
              f"{warm[b] / warm[a]:>9.1f}x")
    result = visit(ROOT, {"model": direction_id}, runs=4)
    assert not result["failed"] and result["shown"] == direction_id
    print(f"{'after, a direction model':<28}{result['times'][0]:>15.2f}s{'':>8}{result['cpu']:>8.2f}s"
          f"{min(result['times'][1:]):>9.2f}s  {', '.join(result['heavy']) or 'none'}   (one first visit)")
    print("CPU = the first visit's process CPU time: what it costs without waiting for other processes' load")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", action="store_true", help="time the Explainability page instead of SHAP itself")
    parser.add_argument("--before", default="d9bbe0e", help="the commit to compare the page with (default d9bbe0e)")
    args = parser.parse_args()
    try:
        page_bench(args.before) if args.page else main()
    finally:
        shutil.rmtree(_TMP, ignore_errors=True)
