# Two entry points for a fresh machine: `make demo` and `make test`. Both create the
# virtual environment with pinned dependencies first (the `.venv` target).
PYTHON ?= python3
VENV := .venv
EUL := $(VENV)/bin/eul
DEMO := demo
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test reliability bench bench-quick lint clean repro

$(VENV): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(VENV)

test: $(VENV)
	$(VENV)/bin/ruff check eul tasks flows benchmarks scripts tests
	$(VENV)/bin/python -m pytest -q --durations=15 -m "not reliability"

# The long failure drills (every drill point of the nightly batch) and the fault suite,
# outside `make test`; then the reliability table from the same runs (docs/reliability.md).
reliability: $(VENV)
	@rows=$$(mktemp); \
	EUL_RELIABILITY_ROWS=$$rows $(VENV)/bin/python -m pytest -q -m reliability; tests=$$?; \
	$(VENV)/bin/python -m benchmarks.reliability --rows $$rows; table=$$?; \
	rm -f $$rows; test $$tests -eq 0 && test $$table -eq 0

lint: $(VENV)
	$(VENV)/bin/ruff check eul tasks flows benchmarks scripts tests
	$(VENV)/bin/ruff format --check eul tasks flows benchmarks scripts tests

# The DVC pipeline on a fresh clone: raw data regenerated to match data.dvc, then every stage.
repro: $(VENV)
	$(EUL) data init
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" DVC_NO_ANALYTICS=1 $(VENV)/bin/dvc repro

bench: $(VENV)
	$(EUL) bench --out results/bench.json

bench-quick: $(VENV)
	$(EUL) bench --quick --out results/bench-quick.json

# The whole pipeline on the embedded defaults, in demo/ (a project folder of its own): data,
# `dvc repro`, deletion requests, the nightly batch, promotion, purge, audit, and a summary
# of what happened and where to look. A second run reuses what is there.
demo: $(VENV)
	$(EUL) demo --dir $(DEMO)

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
