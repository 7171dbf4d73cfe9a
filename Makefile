# One target per habit. `make test` installs what it needs (tools/setup.sh), so a fresh clone
# needs only the Rust toolchain, Python 3 and npm.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: deploy setup setup-lint fmt fmt-check lint lint-infra build test bench demo explain clean-venv iam-rehearsal

setup:
	bash tools/setup.sh

setup-lint:
	bash tools/setup-linters.sh

fmt:
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

lint-infra: setup-lint
	bash tools/lint-infra.sh

lint: fmt-check lint-infra
	$(CARGO) clippy --workspace --all-targets -- -D warnings

build: setup
	$(CARGO) build --workspace --all-targets

# The IAM rehearsal (tools/iam-rehearsal/README.md): the components' AWS calls, and probes that
# must be denied, evaluated against the roles in infra/template.yaml. Node only; npm ci once per
# package-lock change (stamp, as tools/setup.sh does for tools/npm).
IAM_REHEARSAL := tools/iam-rehearsal
iam-rehearsal:
	@if [ ! -f $(IAM_REHEARSAL)/node_modules/.hangar-stamp ] || [ $(IAM_REHEARSAL)/package-lock.json -nt $(IAM_REHEARSAL)/node_modules/.hangar-stamp ]; then \
	  echo "iam-rehearsal: npm ci"; \
	  (cd $(IAM_REHEARSAL) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) && touch $(IAM_REHEARSAL)/node_modules/.hangar-stamp; \
	fi
	cd $(IAM_REHEARSAL) && node --test test/*.test.mjs

# Everything in one profile and one feature set (see crates/workspace-hack), built once.
test: setup lint build iam-rehearsal
	$(CARGO) test --workspace --all-targets --no-fail-fast

# Benchmarks build in the bench profile (optimised); numbers are for this machine, this run.
bench: setup
	rm -rf target/criterion/webhook target/criterion/planner
	$(CARGO) bench -p hangar-bench
	python3 tools/bench_table.py target/criterion webhook

demo: setup
	bash tools/demo.sh

# Needs AWS credentials. sam and cargo-lambda come from the pinned virtualenvs; cargo-lambda
# cross-compiles to arm64 with Zig (see infra/README.md).
deploy: setup setup-lint
	cd infra && PATH="$(CURDIR)/.venv-sam/bin:$(CURDIR)/.venv/bin:$$PATH" sam build --beta-features \
	  && PATH="$(CURDIR)/.venv-sam/bin:$(CURDIR)/.venv/bin:$$PATH" sam deploy --guided
