# Two commands do all set-up on a fresh machine:
#   make run    -> the real-time server on http://127.0.0.1:8080 (open it, press Start, speak)
#   make test   -> lint, type-check and the whole test suite
# make sample  -> the default avatar says the bundled sample (out/sample.mp4) + its motion track
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.run-installed
DEV_STAMP := $(VENV)/.dev-installed
AGENTS := .venv-agents
AGENTS_STAMP := $(AGENTS)/.installed
# TypeScript for the JS client's type check, pinned in avatar/web/package-lock.json
TSC := avatar/web/node_modules/.bin/tsc

.PHONY: run sample test lint train bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# torch==2.13.0 first: it is the CPU build on this disk; anything else pulls a CUDA build.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	bash scripts/setup_system.sh
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[train,face,dev]'
	$(BIN)/pip install -q --no-deps mediapipe==0.10.14
	touch $(RUN_STAMP) $@

# The voice-agent plugins' tests run in a venv of their own: pipecat-ai and livekit-agents need
# protobuf >= 6, mediapipe 0.10.14 (in .venv) needs protobuf < 5. No torch and no mediapipe here.
$(AGENTS_STAMP): pyproject.toml | $(DEV_STAMP)
	$(PYTHON) -m venv $(AGENTS)
	$(AGENTS)/bin/pip install -q --upgrade pip
	$(AGENTS)/bin/pip install -q -e '.[pipecat,livekit]' pytest
	touch $@

# npm comes from scripts/setup_system.sh (the dev set-up runs it).
$(TSC): avatar/web/package-lock.json | $(DEV_STAMP)
	cd avatar/web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(RUN_STAMP)
	$(BIN)/avatar serve $(ARGS)

sample: $(RUN_STAMP)
	@mkdir -p out
	$(BIN)/avatar render avatar/assets/sample.ogg -o out/sample.mp4
	$(BIN)/avatar motion avatar/assets/sample.ogg -o out/motion.json --plot out/motion.png

lint: $(DEV_STAMP) $(TSC)
	$(BIN)/ruff check avatar tests scripts examples
	$(BIN)/ruff format --check avatar tests scripts examples
	$(BIN)/mypy
	bash scripts/check_js.sh

# The numeric tests run twice: on this CPU's widest SIMD path, then on the next narrower one.
# Then the wheel: built from the sdist, installed into a fresh venv, served and rendered from.
test: lint $(AGENTS_STAMP)
	$(BIN)/pytest -q
	$(AGENTS)/bin/pytest -q tests/agents
	$(BIN)/python scripts/second_simd_path.py -- $(BIN)/pytest -q -m "numeric and not slow"
	$(BIN)/python scripts/check_wheel.py

train: $(DEV_STAMP)
	bash scripts/setup_system.sh --train
	$(BIN)/avatar train motion --out runs/motion

bench: $(DEV_STAMP)
	$(BIN)/python scripts/bench_motion.py
	$(BIN)/python scripts/bench_render.py

clean:
	rm -rf $(VENV) $(AGENTS) out .pytest_cache .mypy_cache .ruff_cache avatar/web/node_modules build dist \
		avatar.egg-info
