# keyward: the two commands a new machine needs are `make run` and `make test`.
SHELL := /bin/bash
RUN_DIR := target/run
REDIS_PORT ?= 6390
KEYWARD_PORT ?= 8080
# The revision `make load-compare` measures this tree against.
BASE ?= 240fbde

.PHONY: run test check bench load load-restart load-compare load-unix load-tls load-grpc profile release-pgo usage-memory clean-run

## Install what is missing, start Redis Stack and keyward, mint a demo key.
run:
	bash redis/local.sh install
	cargo build --release --locked
	bash redis/demo.sh $(RUN_DIR) $(REDIS_PORT) $(KEYWARD_PORT)

## Everything CI runs: vendor/fred is fred plus its patch and nothing else,
## format, lints, unit and integration tests.
test:
	bash redis/local.sh install
	bash vendor/check.sh
	cargo fmt --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo test --locked

## Criterion micro-benchmarks (parser, cache hit, cold Argon2id).
bench:
	bash redis/local.sh install
	cargo bench --locked --bench micro

## The load benchmark: starts Redis and keyward, drives wrk, prints figures
## (KEYWARD_BENCH_SECONDS, _KEYS, _CONCURRENCY, _SCENARIO tune it; see docs/performance.md).
load:
	bash redis/local.sh install wrk
	cargo bench --locked --bench load

## One keyward replaced by another on the same Redis: KEYWARD_BENCH_RESTART_KEYS
## (default 1000) keys validated on the new one, 16 clients at once.
load-restart:
	bash redis/local.sh install
	KEYWARD_BENCH_SCENARIO=restart cargo bench --locked --bench load

## Warm C=64 against BASE's keyward (built in target/compare/) and this tree's,
## alternating for KEYWARD_BENCH_ROUNDS rounds (default 3): medians and ratios.
## PGO=1: this tree's side is `make release-pgo`'s binary, built first.
load-compare:
	bash redis/local.sh install wrk
	KEYWARD_BENCH_PGO=$(PGO) bash benches/compare.sh $(BASE)

## keyward built with profile-guided optimisation, trained on the load
## benchmark's scenarios: target/pgo/keyward (benches/pgo.sh).
release-pgo:
	bash redis/local.sh install wrk
	bash benches/pgo.sh

## The usage record's memory and flush cost per layout, on a Redis of its own
## (docs/usage-plans.md, "Usage records"); USAGE_MEMORY_ARGS passes options.
usage-memory:
	bash redis/local.sh install
	python3 benches/usage-memory.py --keys 2000 --listpack-entries 128 $(USAGE_MEMORY_ARGS)

## Warm C=64 with this tree's keyward on Redis over TCP and over its Unix
## socket (redis+unix://), alternating for KEYWARD_BENCH_ROUNDS rounds.
load-unix:
	bash redis/local.sh install wrk
	bash benches/compare.sh --unix

## Warm C=64 with this tree's keyward on Redis over TCP and over TLS with a
## client certificate (rediss://), alternating for KEYWARD_BENCH_ROUNDS rounds.
load-tls:
	bash redis/local.sh install wrk
	bash benches/compare.sh --tls

## Warm C=64 through Envoy to this tree's keyward, asked over HTTP ext_authz
## (/v1/auth) and over gRPC ext_authz (Authorization/Check), alternating for
## KEYWARD_BENCH_ROUNDS rounds: throughput, p99 and keyward CPU per check.
load-grpc:
	bash redis/local.sh install wrk
	bash examples/gateways/install.sh envoy
	bash benches/compare.sh --grpc

## Warm C=64 under `perf record -g`; prints the top of `perf report`: by
## symbol, by library, and with callees (the frame-pointer build in
## target/profile keeps call graphs whole).
PERF_DATA := target/load-profile.perf.data
profile:
	bash redis/local.sh install wrk perf
	RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/profile \
		KEYWARD_BENCH_PROFILE=1 KEYWARD_BENCH_SCENARIO=$${KEYWARD_BENCH_SCENARIO:-warm} \
		cargo bench --locked --bench load
	@for args in "--no-children --percent-limit 1" "--no-children --sort dso --percent-limit 1" \
		"--children --percent-limit 5"; do \
		echo "perf report $$args"; \
		perf report --stdio -g none $$args -i $(PERF_DATA) 2>/dev/null | grep -v -e '^#' -e '^$$'; \
	done
	@echo "(call graphs: perf report -i $(PERF_DATA))"

clean-run:
	-bash redis/local.sh stop $(RUN_DIR)
	rm -rf $(RUN_DIR)
