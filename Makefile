# Postroom: `make run` to use it, `make test` to check it. See README.md.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON3 ?= python3
APT_PACKAGES := dovecot-imapd dovecot-pop3d chromium

.PHONY: run test lint bench test-servers clean

run: $(VENV)/.run-installed
	$(PY) -m channels_app.launcher

test: $(VENV)/.test-installed test-servers lint
	$(PY) -m pytest

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: $(VENV)/.test-installed test-servers
	$(PY) -m bench

$(VENV)/bin/python:
	$(PYTHON3) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.run-installed: pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: pyproject.toml $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.run-installed

# The tests talk to real servers and a real browser from Debian's packages.
test-servers:
	@missing=""; \
	for exe in /usr/sbin/dovecot /usr/lib/dovecot/imap /usr/lib/dovecot/pop3 /usr/bin/chromium; do \
		[ -x $$exe ] || missing=yes; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
		else \
			echo "The tests need: $(APT_PACKAGES). Install them with: sudo apt-get install $(APT_PACKAGES)"; \
			exit 1; \
		fi; \
	fi
	@# Debian starts the system Dovecot on install; the tests run their own on free ports.
	@systemctl disable --now dovecot >/dev/null 2>&1 || true

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
