# keyward: the two commands a new machine needs are `make run` and `make test`.
SHELL := /bin/bash
RUN_DIR := target/run
REDIS_PORT ?= 6390
KEYWARD_PORT ?= 8080

.PHONY: run test check bench load clean-run

## Install what is missing, start Redis Stack and keyward, mint a demo key.
run:
	bash redis/local.sh install
	cargo build --release --locked
	bash redis/demo.sh $(RUN_DIR) $(REDIS_PORT) $(KEYWARD_PORT)

## Everything CI runs: format, lints, unit and integration tests.
test:
	bash redis/local.sh install
	cargo fmt --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo test --locked

## Criterion micro-benchmarks (parser, cache hit, cold Argon2id).
bench:
	bash redis/local.sh install
	cargo bench --locked --bench micro

## The load benchmark: starts Redis and keyward, drives HTTP load, prints figures.
load:
	bash redis/local.sh install
	cargo bench --locked --bench load

clean-run:
	-bash redis/local.sh stop $(RUN_DIR)
	rm -rf $(RUN_DIR)
