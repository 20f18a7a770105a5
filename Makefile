# Postroom: `make run` to use it, `make test` to check it. See README.md.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON3 ?= python3
APT_PACKAGES := dovecot-imapd dovecot-pop3d chromium postgresql redis-server

.PHONY: run test lint bench test-servers clean

run: $(VENV)/.run-installed
	$(PY) -m channels_app.launcher

# Everything on SQLite, then the tests marked `backends` again on PostgreSQL and Redis.
test: $(VENV)/.test-installed test-servers lint
	$(PY) -m pytest
	$(PY) -m tests.backends

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) manage.py makemigrations --check --dry-run

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
	for exe in /usr/sbin/dovecot /usr/lib/dovecot/imap /usr/lib/dovecot/pop3 /usr/bin/chromium \
		/usr/bin/redis-server; do \
		[ -x $$exe ] || missing=yes; \
	done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=yes; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
		else \
			echo "The tests need: $(APT_PACKAGES). Install them with: sudo apt-get install $(APT_PACKAGES)"; \
			exit 1; \
		fi; \
	fi
	@# Debian starts the system services on install; the tests run their own on free ports.
	@for service in dovecot postgresql redis-server; do \
		systemctl disable --now $$service >/dev/null 2>&1 || true; \
	done

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
