# ML Stock Agent: `make run` to use it, `make test` to check it. Both set everything up on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-$(shell sha256sum requirements.txt | cut -c1-16)
PORT   ?= 8501

.PHONY: run test setup demo reset scheduler scheduler-once bench clean

run: demo ## set up, build the demo registry on first start, open the app
	$(PY) -m streamlit run Home.py --server.port $(PORT)

test: setup ## set up, then run the whole test suite
	$(PY) -m pytest -q -rs

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	@rm -f $(VENV)/.requirements-*
	@touch $(STAMP)

demo: setup ## build the demo registry on the bundled data unless it exists (idempotent)
	MLSA_OFFLINE=1 $(PY) -m core.demo

reset: setup ## delete the database and model files, rebuild the demo registry
	MLSA_OFFLINE=1 $(PY) -m core.demo --force

scheduler: setup ## run the daily monitoring loop (see README)
	$(PY) scheduled_tasks.py

scheduler-once: setup ## one daily cycle, for cron
	$(PY) scheduled_tasks.py --once

bench: setup ## print every benchmark's figures
	@for script in bench/*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean: ## remove the virtual environment (keeps data and models)
	rm -rf $(VENV)
