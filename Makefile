# Two commands on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.dev-installed-stamp

.PHONY: venv venv-dev demo demo-multi up down status upgrade upgrade-check worker test bench lock clean

# The runtime set (requirements.lock): what the worker, starter, API and embedded stack need.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=python3.11)")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

# The test and benchmark tools on top (requirements-dev.lock: pytest, selenium, the runpod
# SDK, ...). It follows the runtime stamp, so a demo venv later used for tests gets them, and
# a changed runtime lock installs both again.
$(DEV_STAMP): $(STAMP) requirements-dev.lock
	$(PY) -m pip install --quiet -r requirements.lock -r requirements-dev.lock
	@touch $(DEV_STAMP)

venv: $(STAMP)

venv-dev: $(DEV_STAMP)

# Start the embedded stack (Temporal dev server + S3 server + worker), render the bundled
# example, write out/demo.mp4 and leave the stack running (make down stops it).
# The commands after `up` run with the settings the stack was started with (longtalk.stack exec).
demo: venv up
	$(PY) -m longtalk.stack exec $(PY) starter.py examples/demo.json --output out/demo.mp4 > out/demo.json.tmp && mv out/demo.json.tmp out/demo-result.json
	@$(PY) -c 'import json; r = json.load(open("out/demo-result.json")); r.pop("video", None); print(json.dumps(r, indent=2))'
	@echo "video: out/demo.mp4   (result JSON with the inline video: out/demo-result.json)"
	@echo "watch renders in the Temporal UI: $$($(PY) -m longtalk.stack exec $(PY) -c 'from longtalk.settings import Settings; print(Settings.from_env().temporal_ui_url)')"
	@echo "dashboard (renders, previews, GPUs): $$($(PY) -m longtalk.stack dashboard-link)"

demo-multi: venv up
	$(PY) -m longtalk.stack exec $(PY) starter.py examples/demo_multi.json --output out/demo-multi.mp4 > out/demo-multi-result.json
	@echo "video: out/demo-multi.mp4"

# `up` records the settings (LONGTALK_ variables) it starts the stack with; while it runs, the
# other targets use them, and up, upgrade and worker refuse a variable set to another value.
up: venv
	@mkdir -p out
	$(PY) -m longtalk.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m longtalk.stack down; else echo "nothing to stop"; fi

status: venv
	$(PY) -m longtalk.stack status

# After a git pull: install what changed, then replace the worker (it finishes the windows it
# is rendering first); renders in flight go on with the new code (README, "Upgrading").
upgrade: venv
	$(PY) -m longtalk.stack upgrade

# Which workflow release started each running render; exit 1 when one is of a release this
# code does not support (README, "Upgrading")
upgrade-check: venv
	$(PY) -m longtalk.stack exec $(PY) -m longtalk.versions check

# A worker in the foreground (for example beside `python -m longtalk.stack up --no-worker`),
# with the running stack's settings.
worker: venv
	$(PY) -m longtalk.stack worker

test: venv-dev
	$(PY) -m pytest

bench: venv-dev
	$(PY) bench/run.py

# Store the workflow histories of this release (HEAD) for the replay test: one render per
# workflow shape on a stack of its own -> tests/histories/<short commit>/. Run it before
# changing workflow code (RELEASE=name to choose the folder's name).
.PHONY: histories
histories: venv-dev
	$(PY) scripts/capture_histories.py $(RELEASE)

# Both locks, resolved in a throwaway venv (python 3.11): requirements.lock from the project
# alone, requirements-dev.lock from the "test" extra under those pins. The versions locked
# now are kept (a new dependency is added at its newest version, one no longer needed
# drops out); UPGRADE=1 resolves everything to the newest versions pyproject.toml allows.
LOCK_VENV := $(VENV)-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(if $(UPGRADE),: > $(LOCK_VENV)/old.lock,cat requirements.lock requirements-dev.lock > $(LOCK_VENV)/old.lock)
	$(LOCK_VENV)/bin/python -m pip install --quiet -c $(LOCK_VENV)/old.lock .
	{ echo "# The runtime set (pyproject dependencies) at the versions the test suite ran with (python 3.11):"; \
	  echo "# make venv / demo / up and docker/worker/Dockerfile install this. Regenerate: make lock"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude longtalk; } > $(LOCK_VENV)/runtime.lock
	$(LOCK_VENV)/bin/python -m pip install --quiet -c $(LOCK_VENV)/runtime.lock -c $(LOCK_VENV)/old.lock '.[test]'
	{ echo '# The test and benchmark tools (pyproject extra "test") on top of requirements.lock; make test'; \
	  echo "# installs both. Regenerate: make lock"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude longtalk | grep -vxFf $(LOCK_VENV)/runtime.lock; } > $(LOCK_VENV)/dev.lock
	mv $(LOCK_VENV)/runtime.lock requirements.lock
	mv $(LOCK_VENV)/dev.lock requirements-dev.lock
	rm -rf $(LOCK_VENV)

clean: down
	rm -rf data out
