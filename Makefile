# One target per habit. `make test` installs what it needs (tools/setup.sh), so a fresh clone
# needs only the Rust toolchain, Python 3 and npm.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: deploy setup setup-lint fmt fmt-check lint lint-infra build test bench demo explain clean-venv

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

# Everything in one profile and one feature set (see crates/workspace-hack), built once.
test: setup lint build
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
