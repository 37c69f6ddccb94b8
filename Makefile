# Two entry points for a fresh machine: `make demo` and `make test`. Both create the
# virtual environment with pinned dependencies first (the `.venv` target).
PYTHON ?= python3
VENV := .venv
EUL := $(VENV)/bin/eul
DEMO := demo
DEMO_SUBJECT := s0001
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench bench-quick lint clean repro

$(VENV): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(VENV)

test: $(VENV)
	$(VENV)/bin/ruff check eul tasks flows tests
	$(VENV)/bin/python -m pytest -q

lint: $(VENV)
	$(VENV)/bin/ruff check eul tasks flows tests
	$(VENV)/bin/ruff format --check eul tasks flows tests

# The DVC pipeline on a fresh clone: raw data regenerated to match data.dvc, then every stage.
repro: $(VENV)
	$(EUL) data init
	DVC_NO_ANALYTICS=1 $(VENV)/bin/dvc repro

bench: $(VENV)
	$(EUL) bench --out results/bench.json

bench-quick: $(VENV)
	$(EUL) bench --quick --out results/bench-quick.json

$(DEMO)/data/train.jsonl: | $(VENV)
	$(EUL) data generate --out $(DEMO)/data

$(DEMO)/model/config.json: $(DEMO)/data/train.jsonl
	$(EUL) train --data $(DEMO)/data/train.jsonl --out $(DEMO)/model

$(DEMO)/layers/request-1/layer.safetensors: $(DEMO)/model/config.json
	$(EUL) unlearn --model $(DEMO)/model --data $(DEMO)/data/train.jsonl \
		--heldout $(DEMO)/data/heldout.jsonl --subject $(DEMO_SUBJECT) --out $(DEMO)/layers/request-1

demo: $(DEMO)/layers/request-1/layer.safetensors
	@echo "== before: the deployed model, which still knows subject $(DEMO_SUBJECT)'s records"
	@$(EUL) evaluate --model $(DEMO)/model --data $(DEMO)/data/train.jsonl \
		--test $(DEMO)/data/test.jsonl --heldout $(DEMO)/data/heldout.jsonl \
		--subject $(DEMO_SUBJECT) --out $(DEMO)/before.json
	@echo "== after: the same model with the unlearning layer of request-1"
	@$(EUL) evaluate --model $(DEMO)/model --layer $(DEMO)/layers/request-1 \
		--data $(DEMO)/data/train.jsonl --test $(DEMO)/data/test.jsonl \
		--heldout $(DEMO)/data/heldout.jsonl --subject $(DEMO_SUBJECT) --out $(DEMO)/after.json
	@echo "Files: $(DEMO)/data (data), $(DEMO)/model (base model), $(DEMO)/layers (unlearning layers), $(DEMO)/before.json and $(DEMO)/after.json (metrics)."

clean:
	rm -rf $(DEMO) results .pytest_cache .ruff_cache
