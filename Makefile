# pktchain: every target installs what it needs first (idempotently).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-tap test-unit test-integration test-netns stress lint format docs bench clean

setup: $(STAMP) build/nsh-flowcount build/fastpath.bpf.o

# The example NSH-aware function in C (examples/nsh, docs/nsh.md).
build/nsh-flowcount: examples/nsh/nsh_flowcount.c examples/nsh/Makefile
	$(MAKE) -s -C examples/nsh BUILD=$(CURDIR)/build

# The kernel fast path (docs/kernel-fastpath.md): the tc program the node loads.
BPF_SOURCE := src/pktchain/node/dataplane/bpf/fastpath.bpf.c
build/fastpath.bpf.o: $(BPF_SOURCE) $(STAMP)
	@mkdir -p build
	clang-14 -O2 -g -Wall -target bpf \
		-I/usr/include/$$(dpkg-architecture -qDEB_HOST_MULTIARCH) -c $(BPF_SOURCE) -o $@

$(STAMP): pyproject.toml scripts/install-deps
	scripts/install-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/pktchain demo sfc

# The suite with the default host NICs (veth pairs where the kernel fast path
# can run), then the tests of hosts' traffic through the node again with TAPs.
test: setup
	$(BIN)/pytest -q tests
	PKTCHAIN_HOST_NIC=tap $(BIN)/pytest -q -m datapath tests/netns

test-tap: setup
	PKTCHAIN_HOST_NIC=tap $(BIN)/pytest -q -m datapath tests/netns

test-unit: setup
	$(BIN)/pytest -q tests/unit

test-integration: setup
	$(BIN)/pytest -q tests/integration

test-netns: setup
	$(BIN)/pytest -q tests/netns

# The whole suite three times in a row with one core held by a busy loop.
stress: setup
	scripts/stress 3

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src

format: setup
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

# The reference parts of docs/functions/*.md, from the functions' own declarations.
docs: setup
	$(BIN)/python -m pktchain.functions.sdk.docs --write

bench: setup
	$(BIN)/python bench/switch_vs_bridge.py
	$(BIN)/python bench/update_latency.py
	$(BIN)/python bench/nat_sessions.py
	$(BIN)/python bench/chain_fastpath.py
	$(BIN)/python bench/cluster_chain.py
	$(BIN)/python bench/pipe_startup.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/hasync_lag.py
	$(BIN)/python bench/storm.py --nice 19 --cpu-only
	$(BIN)/python bench/kernel_fastpath.py
	$(BIN)/python bench/contenders.py

clean:
	-$(BIN)/pktchain lab down --all 2>/dev/null
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
