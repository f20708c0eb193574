# Switchboard developer commands. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
BIN       := $(CURDIR)/.cache/bin
GRPCURL_VERSION := v1.9.4
BUF_VERSION     := v1.75.0
GHZ_VERSION     := v0.120.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
# Go tools build inside the clone, so nothing outside it is needed or reused.
GO_ENV    := GOPATH=$(CURDIR)/.cache/go GOCACHE=$(CURDIR)/.cache/go-build GOBIN=$(BIN) GOFLAGS=-modcacherw
# npm's cache too stays in the clone.
NPM_ENV   := npm_config_cache=$(CURDIR)/.cache/npm
LISTEN    ?= 127.0.0.1:50051

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

.PHONY: install
install: $(PY) ## build the Rust core and install both packages (editable) with dev tools into .venv
	$(PY) -m pip install -q -e '.[dev]'

.PHONY: serve
serve: install ## build, then start the gateway on the embedded default config (LISTEN=host:port)
	$(VENV)/bin/switchboard serve --listen $(LISTEN)

.PHONY: tools
tools: $(BIN)/grpcurl $(BIN)/buf $(BIN)/ghz $(BIN)/mockupstream $(BIN)/loadgen $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## pinned grpcurl, buf, ghz, protoc-gen-go(-grpc), the benchmark upstream and load generator, in .cache/bin

$(BIN)/grpcurl:
	$(GO_ENV) go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)

$(BIN)/protoc-gen-go:
	$(GO_ENV) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	$(GO_ENV) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

$(BIN)/buf:
	$(GO_ENV) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

$(BIN)/ghz:
	$(GO_ENV) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

$(BIN)/mockupstream: benches/mockupstream/main.go
	cd benches/mockupstream && $(GO_ENV) go build -o $(BIN)/mockupstream .

$(BIN)/loadgen: benches/loadgen/main.go benches/loadgen/go.mod
	cd benches/loadgen && $(GO_ENV) go build -o $(BIN)/loadgen .

# Debian's redis-server for the cluster tests, which start their own on a free port; tmux, the
# terminal `switchboard top` is tested in.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: system-deps
system-deps: ## redis-server, PostgreSQL and tmux (Debian's packages), when they are missing
	@command -v redis-server >/dev/null && command -v tmux >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends redis-server tmux postgresql; }

.PHONY: protos
protos: $(PY) ## regenerate the Python stubs in service/api from protos/
	$(PY) protos/generate_python.py

.PHONY: lint
lint: install tools ## ruff, mypy, stubtest, buf lint, stub drift, cargo fmt and clippy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m mypy.stubtest router_core --allowlist router_core/stubtest-allowlist.txt
	cd protos && $(BIN)/buf lint
	cd protos && $(BIN)/buf breaking --against released.binpb
	$(PY) protos/generate_python.py --check
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --all-targets --features router_core/python -- -D warnings

.PHONY: examples
examples: tools ## build the examples and the TypeScript client, their code generated from protos/ (Go into .cache/bin/example-go, the rest in place)
	rm -rf examples/go/gen examples/node/gen examples/node/dist examples/java/target clients/typescript/dist
	cd examples/go && PATH=$(BIN):$$PATH $(BIN)/buf generate ../../protos --template buf.gen.yaml
	cd examples/go && $(GO_ENV) go build -o $(BIN)/example-go .
	cd examples/node && $(NPM_ENV) npm ci --no-audit --no-fund --loglevel=error && npm run --silent build
	cd examples/java && mvn -q -B -Dmaven.repo.local=$(CURDIR)/.cache/m2 package
	cd clients/typescript && $(NPM_ENV) npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

.PHONY: release-contract
release-contract: tools ## record protos/ as the released contract (protos/released.binpb), which buf breaking holds later changes to
	cd protos && $(BIN)/buf build -o released.binpb

.PHONY: wheel
wheel: $(PY) ## build a release wheel into dist/ and check it holds router_core (with stub) and service
	rm -rf dist
	$(VENV)/bin/maturin build --release --quiet --interpreter $(PY) --out dist
	$(PY) tests/check_wheel.py dist/*.whl

.PHONY: test
test: lint wheel system-deps ## build everything and run every test (Rust, Python, end to end, grpcurl, bench smoke)
	# --all-targets also runs each criterion benchmark once.
	cargo test --workspace --all-targets
	PATH=$(BIN):$$PATH $(VENV)/bin/pytest -q
	$(MAKE) --no-print-directory bench-quick

.PHONY: bench-quick
bench-quick: install tools system-deps ## the Python and gRPC benchmarks in seconds, as a smoke test (no thresholds)
	$(PY) -m benches.route_boundary --quick
	PATH=$(BIN):$$PATH $(PY) -m benches.rpc --quick
	$(PY) -m benches.chat --quick
	$(PY) -m benches.soak --quick
	$(PY) -m benches.hedging --quick
	$(PY) -m benches.held_streams --quick
	$(PY) -m benches.shared_budgets --quick
	$(PY) -m benches.cluster --quick
	$(PY) -m benches.workers --quick
	$(PY) -m benches.telemetry --quick
	$(PY) -m benches.tenancy --quick
	$(PY) -m benches.shadow --quick
	$(PY) -m benches.floor --quick
	$(PY) -m benches.servicer --quick
	$(PY) -m benches.readme_tables --quick
	$(PY) -m benches.evaluation --quick

.PHONY: bench
bench: install tools system-deps ## benchmarks: the Rust core (criterion), route() across PyO3, Route over gRPC vs the floor
	cargo bench -p router_core
	$(PY) -m benches.route_boundary
	PATH=$(BIN):$$PATH $(PY) -m benches.rpc
	$(PY) -m benches.chat
	$(PY) -m benches.soak
	$(PY) -m benches.held_streams
	$(PY) -m benches.shared_budgets
	$(PY) -m benches.cluster
	$(PY) -m benches.workers
	$(PY) -m benches.telemetry
	$(PY) -m benches.tenancy
	$(PY) -m benches.shadow
	$(PY) -m benches.evaluation
	$(PY) -m benches.floor
	$(PY) -m benches.servicer
	$(PY) -m benches.readme_tables

.PHONY: clean
clean: ## remove build outputs (keeps .venv and .cache)
	rm -rf target dist
