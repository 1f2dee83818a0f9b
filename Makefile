# Two commands do everything on a fresh Debian machine (as root):
#   make run    set up, start the stack (and, as they land, the daemons)
#   make test   set up, start the stack, run the whole test suite against it
# make stop stops everything the project started.

VENV       := .venv
TICKETFLOW := $(VENV)/bin/ticketflow
PYTEST     := $(VENV)/bin/pytest
PYTEST_ARGS ?=

.PHONY: setup run run-ha test test-compose lint stop status status-ha env clean

$(VENV)/.installed: pyproject.toml deploy/bootstrap.sh
	sh deploy/bootstrap.sh
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed
	$(TICKETFLOW) stack up

# Starts every daemon, creates a demo event and prints a walkthrough; Ctrl-C stops the
# daemons (the stack stays up for the next run; make stop stops it too).
run: setup
	@echo
	@echo "Stack connection settings (also: $(TICKETFLOW) stack env):"
	@$(TICKETFLOW) stack env
	@echo
	$(TICKETFLOW) run all

test: setup
	$(PYTEST) $(PYTEST_ARGS)

# The import contracts of pyproject.toml alone (make test checks them too: tests/deploy/test_layers.py).
lint: $(VENV)/.installed
	$(VENV)/bin/lint-imports

stop:
	@if [ -x $(TICKETFLOW) ]; then $(TICKETFLOW) stop; else echo "nothing to stop (no $(VENV))"; fi

# Servers and daemons up/down and each link's lag.
status: $(VENV)/.installed
	$(TICKETFLOW) status

env: $(VENV)/.installed
	@$(TICKETFLOW) stack env

# Removes the virtualenv and the stack's data: a fresh start.
clean: stop
	rm -rf $(VENV) .stack .pytest_cache .hypothesis

# The HA topology (etcd x3, PostgreSQL x3 under Patroni, MariaDB Galera x3, RabbitMQ x3, HAProxy) and
# the daemons on it (two reservation and two billing replicas). `make stop` stops it too;
# `make status-ha` shows its cluster.
run-ha: setup
	$(TICKETFLOW) stack up --topology ha
	@echo
	@$(TICKETFLOW) stack env --topology ha
	@echo
	$(TICKETFLOW) run all --topology ha

status-ha: $(VENV)/.installed
	$(TICKETFLOW) status --topology ha

# docker-compose.yml for real, with podman (no Docker engine or registry needed; as root): installs podman, runc,
# netavark and debootstrap, builds a Debian base and the images, brings the compose file up under its own project
# name on ports 19100-19199, runs tests/compose (the seed's checks and a Patroni-leader kill drill) and takes it
# all down again, also on failure. `make test` does not run these.
export CONTAINERS_CONF ?= $(CURDIR)/.podman/containers.conf
test-compose: $(VENV)/.installed
	sh deploy/docker/podman-setup.sh
	$(VENV)/bin/pip install -q -e '.[compose]'
	sh deploy/docker/build.sh
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PYTEST) -m compose tests/compose -p no:cacheprovider -s $(PYTEST_ARGS)
