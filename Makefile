# mailyard: two commands on a fresh machine -- `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= mailyard-data

.PHONY: run test lint bench fuzz clean venv install
BINDIR ?= $(HOME)/.local/bin

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,speed]'
	touch $(STAMP)

venv: $(STAMP)

## Set up, create a demo domain (example.test, users alice and bob) if needed, and serve on 127.0.0.1.
run: $(STAMP)
	@if [ ! -f $(DATA)/config.toml ]; then $(VENV)/bin/mailyard --data $(DATA) init --domain example.test --demo; fi
	@echo "The mailyard command is $(abspath $(VENV))/bin/mailyard (not on PATH; 'make install' links it"
	@echo "into $(BINDIR)). In another terminal: $(abspath $(VENV))/bin/mailyard --data $(abspath $(DATA)) user list"
	$(VENV)/bin/mailyard --data $(DATA) serve

## Link the mailyard command into BINDIR (default ~/.local/bin), so `mailyard ...` works from any directory.
install: $(STAMP)
	mkdir -p $(BINDIR)
	ln -sf $(abspath $(VENV))/bin/mailyard $(BINDIR)/mailyard
	@case ":$$PATH:" in *":$(BINDIR):"*) ;; *) echo "note: $(BINDIR) is not on your PATH; add it to use 'mailyard'";; esac

## Set up and run the whole test suite, in parallel worker processes (pytest-xdist;
## a test file stays on one worker). Serially: make test PYTEST_ARGS=-p\ no:xdist
PYTEST_ARGS ?= -n 3 --dist loadfile
test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

## Measure throughput and latency; prints a table and writes bench/results.json.
bench: $(STAMP)
	$(PY) -m bench

## Coverage-guided fuzzing (atheris): FUZZ_SECONDS per target, FUZZ_TARGET=smtp|pop3|imap|message|all.
FUZZ_SECONDS ?= 60
FUZZ_TARGET  ?= all
fuzz: $(STAMP)
	@$(PY) -c "import atheris, coverage" 2>/dev/null || $(PY) -m pip install -q -e '.[test,speed,fuzz]'
	$(PY) tests/fuzz/run.py --seconds $(FUZZ_SECONDS) --target $(FUZZ_TARGET)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
