# Thin wrappers: dev.py does the work and needs nothing but Python 3.11.
PYTHON ?= python3

.PHONY: demo test lint bench setup ui
demo:
	$(PYTHON) dev.py demo
test:
	$(PYTHON) dev.py test
bench:
	$(PYTHON) dev.py bench
setup:
	$(PYTHON) dev.py setup
ui:
	$(PYTHON) dev.py ui
lint:
	$(PYTHON) dev.py setup && .venv/bin/ruff check .
