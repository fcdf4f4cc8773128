# FaceLab: two commands for a newcomer, `make run` and `make test` (see README.md).
#
# The virtual environment is created once; requirements are reinstalled only when a requirements
# file changes (stamp files inside .venv), so re-running either command is instant.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
ADDRESS ?= 127.0.0.1
PYTEST_ARGS ?=

STAMP := $(VENV)/.facelab-requirements
TEST_STAMP := $(VENV)/.facelab-requirements-test

.DEFAULT_GOAL := help
.PHONY: help run test bench clean distclean

help:
	@echo "make run    start the FaceLab dashboard on http://$(ADDRESS):$(PORT) (PORT=... to change)"
	@echo "make test   run the tests (PYTEST_ARGS='-k detect -x' to pass options to pytest)"
	@echo "make bench  run the speed scripts in bench/"
	@echo "make clean  remove Python and test caches (keeps .venv and weights/)"
	@echo "make distclean  also remove .venv"

# Order-only prerequisite: creating the venv must not make the stamps look stale.
$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	@echo "installing requirements.txt into $(VENV) (the first time takes several minutes)"
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

# requirements-test.txt includes requirements.txt (-r), so it is installed after it.
$(TEST_STAMP): requirements-test.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-test.txt
	@touch $@

run: $(STAMP)
	$(PY) -m streamlit run streamlit_app.py --server.address $(ADDRESS) --server.port $(PORT) \
		--server.headless true --browser.gatherUsageStats false

# make itself exits 2 on any failure; PYTEST_STATUS_FILE (used by .ci/run) receives pytest's own
# exit code so that CI can report it unchanged.
PYTEST_STATUS_FILE ?=
test: $(TEST_STAMP)
	@echo "$(PY) -m pytest $(PYTEST_ARGS)"
	@status=0; $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	if [ -n "$(PYTEST_STATUS_FILE)" ]; then echo $$status > "$(PYTEST_STATUS_FILE)"; fi; \
	exit $$status

# Each script prints its own figures; a failing script fails the target. Run as modules
# (`python -m bench.detect`) so that `import core` works from the repository root.
# facenet-pytorch is measured side by side with our detector; --no-deps because it pins an older
# torch (it ships its MTCNN weights, so nothing is downloaded).
bench: $(STAMP)
	@$(PY) -c "import facenet_pytorch" 2>/dev/null || \
		$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0 || \
		echo "facenet-pytorch unavailable: bench/detect.py will skip that column"
	@set -e; found=0; for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		name=$$(basename "$$script" .py); \
		case "$$name" in _*) continue;; esac; \
		found=1; echo "== bench/$$name.py"; $(PY) -m "bench.$$name"; \
	done; [ $$found = 1 ] || echo "no bench scripts in bench/ yet"

clean:
	find . -path ./$(VENV) -prune -o -type d \( -name __pycache__ -o -name .pytest_cache \) \
		-prune -exec rm -rf {} +
	rm -rf screenshots

distclean: clean
	rm -rf $(VENV)
