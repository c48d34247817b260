//! Micro-benchmarks: the key parser, a verified-secret cache hit, and a cold
//! Argon2id verification at the default cost (64 MiB, t=3, p=1).
//!
//! `cargo bench --bench micro` (or `make bench`).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use keyward::config::Config;
use keyward::hash::Hasher;
use keyward::key::{ApiKey, Secret};

const KEY: &str = "sk-proj.alpha.k_Ab3dE6gH9jK1.abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ";

fn hasher() -> Hasher {
    // Default Argon2id cost; the URL is never dialled.
    let config = Config::from_lookup(|name| {
        (name == "KEYWARD_REDIS_URL").then(|| "redis://127.0.0.1:1".into())
    })
    .expect("bench config");
    Hasher::new(&config).expect("hasher")
}

fn benches(c: &mut Criterion) {
    c.bench_function("parse key", |b| b.iter(|| ApiKey::parse(black_box(KEY))));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hasher = hasher();
    let key = ApiKey::parse(KEY).unwrap();
    let secret = key.secret.clone();
    let phc = runtime.block_on(hasher.hash(&secret)).unwrap();
    let cache_key = hasher.cache_key(&key);
    assert_eq!(
        runtime
            .block_on(hasher.verify(&secret, &phc, Some(&cache_key)))
            .unwrap(),
        keyward::hash::Verdict::Match
    );

    c.bench_function("verify: cache hit", |b| {
        b.iter(|| assert!(hasher.cached(&hasher.cache_key(black_box(&key))).is_some()))
    });
    let mut wrong = key.clone();
    wrong.secret = Secret::parse("ZZZZefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ").unwrap();
    c.bench_function("verify: cache miss (wrong secret)", |b| {
        b.iter(|| {
            assert!(hasher
                .cached(&hasher.cache_key(black_box(&wrong)))
                .is_none())
        })
    });

    let mut cold = c.benchmark_group("argon2id");
    cold.sample_size(10);
    cold.bench_function("verify: cold (m=64MiB, t=3, p=1)", |b| {
        b.iter(|| {
            runtime
                .block_on(hasher.verify(black_box(&secret), black_box(&phc), None))
                .unwrap()
        })
    });
    cold.finish();
}

criterion_group!(micro, benches);
criterion_main!(micro);
