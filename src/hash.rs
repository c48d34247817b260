//! Argon2id hashing and verification: the only module that uses argon2.
//!
//! Argon2id (64 MiB, 3 passes by default) costs tens of milliseconds of a
//! core, so three things keep it off the hot path:
//!
//! - **A verified-secret cache.** After a secret has been verified once, we
//!   remember which stored hash it matched, keyed by an HMAC-SHA-256 of the
//!   project, key id and secret (under a random per-process key, so the cache
//!   is useless outside this process and holds no secret). A validation
//!   computes that HMAC before it reads Redis, so a warm validation knows
//!   "right secret, if the document still carries hash H" before its first
//!   round trip, and only checks H against the document it reads: re-keying
//!   or the end of a rotation's grace period changes what the document
//!   carries and so misses the cache. Only successes are cached.
//! - **A concurrency cap.** Argon2id runs on tokio's blocking pool, at most
//!   `argon2_concurrency` at once, so async workers stay free for warm
//!   validations, health checks and metrics.
//! - **A bounded queue.** At most `argon2_queue` more verifications may wait;
//!   past that the caller gets `Error::Busy` (503) at once.
//!
//! Argon2id's memory is its own, not the global allocator's: each run's
//! blocks (`KEYWARD_ARGON2_MEMORY_KIB`, or a stored hash's own `m`) are a
//! mapping from the system's allocator, returned to the system when a burst
//! of runs ends ([`Spare`]). glibc maps every allocation larger than its
//! largest mmap threshold (32 MiB on 64-bit) and unmaps it when freed; so a
//! run asks for at least that much room ([`MAPPED_MIN_BLOCKS`]), of which
//! only the blocks it uses become resident. A run that ends while others
//! of its hasher are running or waiting leaves its blocks to the next one,
//! so a burst maps and faults its memory in once rather than once per run
//! (a fresh 19 MiB per run cost a quarter of the cold rate at OWASP's
//! minimum); the last run of a burst frees them all. Argon2id thus holds at
//! most concurrency x memory while runs go on, and nothing between bursts.
//! Left to an allocator, freed blocks stayed resident: under that size in
//! glibc's arenas of tokio's blocking threads (880 MiB after 50 mints and
//! 50 cold validations at OWASP's minimum, 19 MiB), and at any size in the
//! binary's global allocator (mimalloc: 171 MiB during a warm run after
//! minting at the default 64 MiB, against 34 MiB). A pool of buffers kept
//! for good (which this replaces) held concurrency x memory for good: 38 MiB
//! at OWASP's minimum.
//!
//! During a rotation a key has two hashes. A short *tag* stored beside each
//! hash (see [`Hasher::tag`]) says which of the two a presented secret can
//! belong to, so a wrong secret still costs at most one Argon2id run.

use std::alloc::System;
use std::sync::{Arc, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::key::{ApiKey, Secret};
use crate::telemetry::{metric, Handles};
use secrecy::ExposeSecret;

static CACHE_HITS: Handles<metrics::Counter, 0> = Handles::new(metric::VERIFY_CACHE_HITS, []);

type HmacSha256 = Hmac<Sha256>;

pub struct Hasher {
    /// Parameters for newly minted hashes.
    params: Params,
    /// The largest (m, t, p) a stored hash may ask for (see [`MAX_MEMORY_KIB`]).
    bounds: (u32, u32, u32),
    /// Permits for running plus queued verifications; none left means busy.
    admitted: Arc<Semaphore>,
    /// How many `admitted` holds: all free, no run is in flight.
    admitted_total: usize,
    /// Blocks left by runs for the runs after them, within a burst.
    spare: Arc<Spare>,
    /// Permits for running verifications.
    running: Arc<Semaphore>,
    /// HMAC of (project, key id, secret) -> the stored PHC hash it matched.
    cache: Option<moka::sync::Cache<CacheKey, Arc<str>>>,
    /// HMAC-SHA-256 keyed once, at start-up, with a random per-process key,
    /// so cache contents are useless outside this process. Cloned per use.
    mac: HmacSha256,
    /// The deployment's peppers (`KEYWARD_VERIFY_PEPPER_FILE`), each with
    /// its id; the first makes new digests. Empty: no verified digest is made or read.
    peppers: Vec<(String, HmacSha256)>,
}

/// What `apiverify:<p>:<k>` holds: hash fingerprint -> `<pepper id>.<digest>`.
pub type VerifiedDigests = std::collections::HashMap<String, String>;

/// What an Argon2id verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    Mismatch,
    /// The stored hash is not a PHC string argon2 can read.
    Corrupt,
}

/// A key's stored hashes, each a PHC string with its tag: its secret's, and
/// during a rotation's grace period the previous secret's.
#[derive(Debug, Clone, Copy)]
pub struct Hashes<'a> {
    pub current: (&'a str, Option<&'a str>),
    pub previous: Option<(&'a str, Option<&'a str>)>,
}

impl<'a> Hashes<'a> {
    /// Each stored hash with which of the key's secrets it is.
    fn each(self) -> impl Iterator<Item = (&'a str, Matched)> {
        let previous = self.previous.map(|(phc, _)| (phc, Matched::Previous));
        std::iter::once((self.current.0, Matched::Current)).chain(previous)
    }
}

/// Which of a key's hashes a secret matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    Current,
    /// The hash of the secret before the last rotation, in its grace period.
    Previous,
    Neither,
    /// A stored hash is not a PHC string argon2 can read.
    Corrupt,
}

/// What a presented secret's free checks say, before any Argon2id run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// This process verified the secret against that hash before (the
    /// cache), or an instance of the deployment did (a verified digest).
    Known(Matched),
    /// The tags say the secret is none of the key's: refused for free.
    Wrong,
    /// A tag says the secret can be the key's: worth an Argon2id run
    /// whatever the wrong-secret budget says (it is the holder's, but for a
    /// 32-bit tag collision).
    Tagged,
    /// No tag says either way (a key written without tags): only the
    /// wrong-secret budget bounds what wrong secrets cost.
    Untagged,
}

/// The largest Argon2id parameters a stored hash may ask for, whatever the
/// deployment's own (which raise them when larger): 256 MiB, 16 passes, 16
/// lanes. A hash beyond them is unreadable, never run: one stored
/// `m=4294967295` would abort the process, a `t=4294967295` hold a permit
/// for good.
pub const MAX_MEMORY_KIB: u32 = 256 * 1024;
pub const MAX_ITERATIONS: u32 = 16;
pub const MAX_PARALLELISM: u32 = 16;

/// Bytes of each SHA-256 kept in a tag: 32 bits tells two secrets apart
/// with certainty for practical purposes and says nothing useful about a
/// secret of 190+ bits.
const TAG_BYTES: usize = 4;

/// What a presented key is looked up by in the verified-secret cache.
pub type CacheKey = [u8; 32];

impl Hasher {
    pub fn new(config: &Config) -> Result<Self> {
        let a = config.argon2;
        let params = Params::new(a.memory_kib, a.iterations, a.parallelism, None)
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))?;
        let cache = (config.verify_cache_entries > 0)
            .then(|| moka::sync::Cache::new(config.verify_cache_entries));
        let admitted_total = config.argon2_concurrency + config.argon2_queue;
        Ok(Self {
            bounds: (
                a.memory_kib.max(MAX_MEMORY_KIB),
                a.iterations.max(MAX_ITERATIONS),
                a.parallelism.max(MAX_PARALLELISM),
            ),
            params,
            admitted: Arc::new(Semaphore::new(admitted_total)),
            admitted_total,
            spare: Arc::default(),
            running: Arc::new(Semaphore::new(config.argon2_concurrency)),
            cache,
            mac: HmacSha256::new_from_slice(&rand::random::<[u8; 32]>())
                .map_err(|e| Error::Internal(format!("HMAC key: {e}")))?,
            peppers: config
                .verify_peppers
                .iter()
                .map(|pepper| {
                    let pepper = pepper.expose_secret().as_bytes();
                    let id = Sha256::new()
                        .chain_update(b"keyward pepper id\0")
                        .chain_update(pepper);
                    let id = hex::encode(&id.finalize()[..4]);
                    let mac = HmacSha256::new_from_slice(pepper)
                        .map_err(|e| Error::Internal(format!("pepper: {e}")))?;
                    Ok((id, mac))
                })
                .collect::<Result<_>>()?,
        })
    }

    /// The cache key of a presented key: HMAC(project, key id, secret).
    pub fn cache_key(&self, key: &ApiKey) -> CacheKey {
        self.keyed(
            key.project_id.as_str().as_bytes(),
            key.key_id.as_str().as_bytes(),
            &key.secret,
        )
    }

    /// The cache key of a presented operator token: the same HMAC, under a
    /// "project" no project id can be (`\x01`), so operator tokens and API
    /// keys share the cache without ever meeting.
    pub fn operator_cache_key(&self, operator_id: &str, secret: &Secret) -> CacheKey {
        self.keyed(b"\x01operator", operator_id.as_bytes(), secret)
    }

    fn keyed(&self, owner: &[u8], id: &[u8], secret: &Secret) -> CacheKey {
        let mut mac = self.mac.clone();
        mac.update(owner);
        mac.update(&[0]);
        mac.update(id);
        mac.update(&[0]);
        mac.update(secret.expose());
        mac.finalize().into_bytes().into()
    }

    /// The stored hash this key's secret was verified against, if any; no
    /// Argon2id work. The caller must check that the key's document still
    /// carries it.
    pub fn cached(&self, cache_key: &CacheKey) -> Option<Arc<str>> {
        self.cache.as_ref()?.get(cache_key)
    }

    fn forget(&self, cache_key: &CacheKey) {
        if let Some(cache) = &self.cache {
            cache.invalidate(cache_key);
        }
    }

    /// Verifies `secret` against the PHC string `phc` with Argon2id, using
    /// the parameters the hash carries, and caches a success.
    /// `cache_key` (from [`Hasher::cache_key`]) remembers the success.
    pub async fn verify(
        &self,
        secret: &Secret,
        phc: &str,
        cache_key: Option<&CacheKey>,
    ) -> Result<Verdict> {
        if !self.acceptable(phc) {
            return Ok(Verdict::Corrupt);
        }
        let owned_secret = secret.clone();
        let owned_phc = phc.to_owned();
        let ok = self
            .run_blocking(move |spare| {
                matches(owned_secret.expose(), &owned_phc, spare).unwrap_or(false)
            })
            .await?;
        if !ok {
            return Ok(Verdict::Mismatch);
        }
        if let Some(cache_key) = cache_key {
            self.keep(cache_key, phc);
        }
        Ok(Verdict::Match)
    }

    /// Caches that the secret behind `cache_key` matched `phc`.
    fn keep(&self, cache_key: &CacheKey, phc: &str) {
        if let Some(cache) = &self.cache {
            cache.insert(*cache_key, Arc::from(phc));
        }
    }

    /// The verified digest: what tells the other instances that `key`'s secret
    /// matched the hash `phc`: HMAC-SHA-256 under the pepper of the hash's
    /// SHA-256, the project, the key id and the secret. Tied to the hash, so
    /// a re-key or a rotation's end leaves it matching nothing.
    fn digest(mac: &HmacSha256, key: &ApiKey, phc: &str) -> String {
        let mut mac = mac.clone();
        mac.update(b"keyward verified secret v1\0");
        mac.update(&Sha256::digest(phc.as_bytes()));
        for part in [
            key.project_id.as_str().as_bytes(),
            key.key_id.as_str().as_bytes(),
        ] {
            mac.update(part);
            mac.update(&[0]);
        }
        mac.update(key.secret.expose());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The field of `apiverify:<p>:<k>` for the hash `phc`: its fingerprint.
    fn field(phc: &str) -> String {
        hex::encode(&Sha256::digest(phc.as_bytes())[..8])
    }

    /// The verified digest to share after `key`'s secret matched `matched` of `hashes`:
    /// (field, value) with the first pepper; `None` without one.
    fn digest_to_share(
        &self,
        key: &ApiKey,
        hashes: Hashes<'_>,
        matched: Matched,
    ) -> Option<(String, String)> {
        let (id, mac) = self.peppers.first()?;
        let phc = match matched {
            Matched::Current => hashes.current.0,
            Matched::Previous => hashes.previous?.0,
            Matched::Neither | Matched::Corrupt => return None,
        };
        Some((
            Self::field(phc),
            format!("{id}.{}", Self::digest(mac, key, phc)),
        ))
    }

    /// Whether `verified_digests` (read from Redis) says an instance of this
    /// deployment verified exactly this secret against one of `hashes`: no
    /// Argon2id, a match cached like one. The flag says whether the digest
    /// was made with an older pepper (write it again with the first).
    fn find_verified(
        &self,
        key: &ApiKey,
        cache_key: &CacheKey,
        hashes: Hashes<'_>,
        verified_digests: &VerifiedDigests,
    ) -> Option<(Matched, bool)> {
        for (phc, matched) in hashes.each() {
            let Some((id, digest)) = verified_digests
                .get(&Self::field(phc))
                .and_then(|v| v.split_once('.'))
            else {
                continue;
            };
            let Some(i) = self.peppers.iter().position(|(pid, _)| pid == id) else {
                continue;
            };
            let expected = Self::digest(&self.peppers[i].1, key, phc);
            if bool::from(expected.as_bytes().ct_eq(digest.as_bytes())) {
                metrics::counter!(metric::VERIFY_REMEMBERED).increment(1);
                self.keep(cache_key, phc);
                return Some((matched, i != 0));
            }
        }
        None
    }

    /// Whether `phc` is a PHC string argon2 can read whose parameters are
    /// within this deployment's bounds (see [`MAX_MEMORY_KIB`]); pure, no
    /// Argon2id. A hash that is not is never run.
    pub fn acceptable(&self, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return false;
        };
        let Ok(params) = Params::try_from(&hash) else {
            return false;
        };
        let (m, t, p) = self.bounds;
        params.m_cost() <= m && params.t_cost() <= t && params.p_cost() <= p
    }

    /// What the free checks say of a presented secret, in this order: the
    /// cache (this process verified it against one of `hashes`; an entry
    /// for a hash the key no longer carries is forgotten), a digest
    /// `verified_digests` holds (an instance of the deployment verified it; the
    /// second value is what to write again when the digest was made with an
    /// older pepper), then the tags. No Argon2id.
    pub fn screen(
        &self,
        key: &ApiKey,
        cache_key: &CacheKey,
        cached: Option<&str>,
        hashes: Hashes<'_>,
        verified_digests: &VerifiedDigests,
    ) -> (Screen, Option<(String, String)>) {
        if let Some(cached) = cached {
            match hashes.each().find(|(phc, _)| *phc == cached) {
                Some((_, matched)) => {
                    CACHE_HITS.with([], |c| c.increment(1));
                    return (Screen::Known(matched), None);
                }
                None => self.forget(cache_key),
            }
        }
        if let Some((matched, stale)) = self.find_verified(key, cache_key, hashes, verified_digests)
        {
            let digest_to_share = stale.then(|| self.digest_to_share(key, hashes, matched));
            return (Screen::Known(matched), digest_to_share.flatten());
        }
        let (candidates, tagged) = Self::candidates(&key.secret, hashes);
        let screen = match (candidates.is_empty(), tagged) {
            (true, _) => Screen::Wrong,
            (false, true) => Screen::Tagged,
            (false, false) => Screen::Untagged,
        };
        (screen, None)
    }

    /// The hashes `secret` can belong to, by their tags: a hash whose tag
    /// says no is left out, and a tag that says yes leaves out the other;
    /// and whether a tag said yes (each tag is computed once).
    fn candidates<'a>(secret: &Secret, hashes: Hashes<'a>) -> (Vec<(&'a str, Matched)>, bool) {
        let current = Self::tag_matches(hashes.current.1, secret, hashes.current.0);
        let previous = hashes
            .previous
            .map(|(phc, tag)| Self::tag_matches(tag, secret, phc));
        let mut candidates = Vec::with_capacity(2);
        if current != Some(false) && previous != Some(Some(true)) {
            candidates.push((hashes.current.0, Matched::Current));
        }
        if let (Some((phc, _)), Some(prev)) = (hashes.previous, previous) {
            if prev != Some(false) && current != Some(true) {
                candidates.push((phc, Matched::Previous));
            }
        }
        let tagged = current == Some(true) || previous == Some(Some(true));
        (candidates, tagged)
    }

    /// Which of a key's hashes a secret this process has not verified
    /// matches, by Argon2id against the hashes its tags allow (a wrong
    /// secret costs at most one run; a match is cached under `cache_key`),
    /// and the verified digest to share in Redis.
    pub async fn verify_key(
        &self,
        key: &ApiKey,
        cache_key: &CacheKey,
        hashes: Hashes<'_>,
    ) -> Result<(Matched, Option<(String, String)>)> {
        for (phc, matched) in Self::candidates(&key.secret, hashes).0 {
            match self.verify(&key.secret, phc, Some(cache_key)).await? {
                Verdict::Match => return Ok((matched, self.digest_to_share(key, hashes, matched))),
                Verdict::Mismatch => {}
                Verdict::Corrupt => return Ok((Matched::Corrupt, None)),
            }
        }
        Ok((Matched::Neither, None))
    }

    /// The tag stored beside the hash `phc` of `secret`:
    /// `<fingerprint of phc>.<fingerprint of phc and secret>`, hex. The first
    /// half ties the tag to its hash, so a tag left behind by a tool that
    /// replaced the hash alone is recognised as stale rather than trusted.
    pub fn tag(secret: &Secret, phc: &str) -> String {
        let of_hash = Sha256::digest(phc.as_bytes());
        let of_both = Sha256::new()
            .chain_update(phc.as_bytes())
            .chain_update([0])
            .chain_update(secret.expose())
            .finalize();
        format!(
            "{}.{}",
            hex::encode(&of_hash[..TAG_BYTES]),
            hex::encode(&of_both[..TAG_BYTES])
        )
    }

    /// Whether `tag` was made for the hash `phc` (it says nothing about a secret).
    pub fn tag_is_for(tag: &str, phc: &str) -> bool {
        let of_hash = Sha256::digest(phc.as_bytes());
        tag.split_once('.')
            .is_some_and(|(h, _)| h == hex::encode(&of_hash[..TAG_BYTES]))
    }

    /// Whether `secret` can be the secret behind `phc`, by its tag: `None`
    /// when there is no tag or it was made for another hash.
    pub fn tag_matches(tag: Option<&str>, secret: &Secret, phc: &str) -> Option<bool> {
        let tag = tag.filter(|tag| Self::tag_is_for(tag, phc))?;
        Some(bool::from(
            tag.as_bytes().ct_eq(Self::tag(secret, phc).as_bytes()),
        ))
    }

    /// Hashes a new secret into a PHC string with the configured parameters.
    pub async fn hash(&self, secret: &Secret) -> Result<String> {
        let secret = secret.clone();
        let params = self.params.clone();
        self.run_blocking(move |spare| {
            hash_new(secret.expose(), params, spare)
                .map_err(|e| Error::Internal(format!("argon2 hash: {e}")))
        })
        .await?
    }

    /// Runs Argon2id work on the blocking pool, under the cap and the queue
    /// bound. The permits go with the work, so a caller that gives up (a
    /// timeout, a closed connection) frees its place only when its run has
    /// ended: at most `argon2_concurrency` runs, and so blocks, at once. The
    /// last run of a burst (no other admitted once its permits are back)
    /// frees the spare blocks.
    async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Spare) -> T + Send + 'static,
    ) -> Result<T> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy)?;
        let admitted = Admitted {
            permit: Some(admitted),
            spare: self.spare.clone(),
            all: self.admitted_total,
        };
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("argon2 semaphore closed".into()))?;
        metrics::counter!(metric::ARGON2_RUNS).increment(1);
        let span = tracing::debug_span!("argon2");
        tokio::task::spawn_blocking(move || {
            let done = span.in_scope(|| work(&admitted.spare));
            drop((running, admitted));
            done
        })
        .instrument(tracing::Span::current())
        .await
        .map_err(|e| Error::Internal(format!("argon2 task: {e}")))
    }
}

/// Blocks a run's allocation holds room for, at least: more than glibc's
/// largest mmap threshold (32 MiB on 64-bit), so that the allocation is a
/// mapping of its own, unmapped when freed (see the module's doc).
const MAPPED_MIN_BLOCKS: usize = 32 * 1024 + 1;

/// A run's place among the admitted (running or waiting). However it ends
/// (done, its caller gone while it waited, a panic), the last of a burst to
/// give its place back frees the spare blocks.
struct Admitted {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    spare: Arc<Spare>,
    /// The admitted permits there are: all free, none in flight.
    all: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let permits = Arc::clone(permit.semaphore());
        drop(permit);
        if permits.available_permits() == self.all {
            self.spare.release();
        }
    }
}

/// Argon2id blocks a run left for the runs after it, while a burst lasts
/// (see the module's doc): each a mapping of its own.
#[derive(Default)]
pub struct Spare(Mutex<Vec<Buffer>>);

impl Spare {
    fn kept(&self) -> std::sync::MutexGuard<'_, Vec<Buffer>> {
        // A list of buffers, whole after every statement.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `work` with `blocks` Argon2id blocks (1 KiB each): a spare
    /// buffer's (Argon2id writes every block before it reads it, so what
    /// an earlier run left there is never read), else a new mapping's,
    /// zeroed. Left spare after.
    fn with_blocks<T>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
        let (kept, too_small) = {
            let mut kept = self.kept();
            match kept.iter().position(|b| b.capacity() >= blocks) {
                Some(i) => (Some(kept.swap_remove(i)), None),
                // Replaced, not added to: the spare never outnumber the runs.
                None => (None, kept.pop()),
            }
        };
        drop(too_small);
        let mut memory =
            kept.unwrap_or_else(|| Buffer::with_capacity_in(blocks.max(MAPPED_MIN_BLOCKS), System));
        memory.resize(blocks, Block::default());
        let done = work(&mut memory);
        self.kept().push(memory);
        done
    }

    /// Returns every spare buffer to the system.
    fn release(&self) {
        let kept = std::mem::take(&mut *self.kept());
        drop(kept);
    }
}

/// Argon2id's blocks, from the system's allocator.
type Buffer = allocator_api2::vec::Vec<Block, System>;

/// Whether `secret` is the secret behind the PHC string `phc`, as argon2's
/// `PasswordVerifier` answers (the hash's own algorithm, version and
/// parameters, output compared in constant time).
/// `None` when `phc` cannot be verified at all: no salt or output, an
/// algorithm, version or parameters argon2 rejects.
fn matches(secret: &[u8], phc: &str, spare: &Spare) -> Option<bool> {
    let hash = PasswordHash::new(phc).ok()?;
    let (salt, expected) = (hash.salt?, hash.hash?);
    let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
    let version = hash
        .version
        .map_or(Ok(Version::default()), Version::try_from);
    let params = Params::try_from(&hash).ok()?;
    let mut salt_bytes = [0; Salt::MAX_LENGTH];
    let salt = salt.decode_b64(&mut salt_bytes).ok()?;
    let mut output = [0; Output::MAX_LENGTH];
    let output = &mut output[..expected.len()];
    let argon2 = Argon2::new(algorithm, version.ok()?, params.clone());
    spare
        .with_blocks(params.block_count(), |blocks| {
            argon2.hash_password_into_with_memory(secret, salt, output, blocks)
        })
        .ok()?;
    Some(bool::from(output.ct_eq(expected.as_bytes())))
}

/// A PHC string of a fresh Argon2id (v19) hash of `secret` under `params`,
/// with a random salt: what argon2's `PasswordHasher`
/// would produce.
fn hash_new(secret: &[u8], params: Params, spare: &Spare) -> argon2::password_hash::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0; Salt::MAX_LENGTH];
    let salt_raw = salt.decode_b64(&mut salt_bytes)?;
    let mut output = [0; Params::DEFAULT_OUTPUT_LEN];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    spare.with_blocks(params.block_count(), |blocks| {
        argon2.hash_password_into_with_memory(secret, salt_raw, &mut output, blocks)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&output)?),
    };
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};
    use argon2::ParamsBuilder;

    use super::*;

    fn params(m: u32, t: u32, p: u32, output: Option<usize>) -> Params {
        Params::new(m, t, p, output).unwrap()
    }

    #[test]
    fn a_new_hash_is_an_argon2id_phc_string_argon2_itself_verifies() {
        let phc = hash_new(b"secret", params(64, 2, 1, None), &Spare::default()).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=2,p=1$"), "{phc}");
        let hash = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"secret", &hash).is_ok());
        assert!(Argon2::default().verify_password(b"secreT", &hash).is_err());
    }

    #[test]
    fn verification_answers_as_argon2s_own_for_every_kind_of_stored_hash() {
        let salt = Salt::from_b64("c29tZXNhbHRzb21lc2FsdA").unwrap();
        let mut with_key_id = ParamsBuilder::new();
        with_key_id
            .m_cost(64)
            .t_cost(1)
            .keyid(argon2::KeyId::new(b"k1").unwrap())
            .data(argon2::AssociatedData::new(b"ad").unwrap());
        let kinds = [
            (Algorithm::Argon2id, Version::V0x13, params(64, 1, 1, None)),
            (Algorithm::Argon2id, Version::V0x13, params(256, 1, 1, None)),
            (Algorithm::Argon2id, Version::V0x13, params(32, 3, 2, None)),
            (Algorithm::Argon2id, Version::V0x10, params(64, 1, 1, None)),
            (Algorithm::Argon2i, Version::V0x13, params(64, 1, 1, None)),
            (Algorithm::Argon2d, Version::V0x13, params(64, 1, 1, None)),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                params(64, 1, 1, Some(64)),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                params(64, 1, 1, Some(12)),
            ),
            (
                Algorithm::Argon2id,
                Version::V0x13,
                with_key_id.build().unwrap(),
            ),
        ];
        let mut good: Vec<String> = kinds
            .into_iter()
            .map(|(algorithm, version, params)| {
                let phc = Argon2::new(algorithm, version, params)
                    .hash_password(b"secret", salt)
                    .unwrap();
                phc.to_string()
            })
            .collect();
        let phc = good[0].clone();
        // No version: v19.
        good.push(phc.replace("$v=19", ""));
        let bad = [
            phc.replace("$v=19", "$v=17"),
            phc.replace("argon2id", "argon2x"),
            phc.replace("m=64", "m=4"),
            phc.replace("t=1", "t=1,x=1"),
            phc.rsplit_once('$').unwrap().0.to_owned(),
        ];
        for phc in good.iter().chain(&bad) {
            let hash = PasswordHash::new(phc).unwrap();
            for secret in [&b"secret"[..], b"secreT", b""] {
                let theirs = Argon2::default().verify_password(secret, &hash).is_ok();
                let ours = matches(secret, phc, &Spare::default()).unwrap_or(false);
                assert_eq!(ours, theirs, "{phc} with {secret:?}");
            }
        }
        for phc in &good {
            assert_eq!(
                matches(b"secret", phc, &Spare::default()),
                Some(true),
                "{phc}"
            );
            assert_eq!(
                matches(b"secreT", phc, &Spare::default()),
                Some(false),
                "{phc}"
            );
        }
        for phc in &bad {
            assert_eq!(matches(b"secret", phc, &Spare::default()), None, "{phc}");
        }
    }

    #[test]
    fn a_burst_reuses_one_mapping_and_its_end_returns_it() {
        let spare = Spare::default();
        let address = |spare: &Spare| spare.with_blocks(8, |memory| memory.as_ptr() as usize);
        // A new mapping is zeroed, has the blocks asked for and room past
        // glibc's mmap ceiling.
        for blocks in [8, 19 * 1024, 64 * 1024] {
            Spare::default().with_blocks(blocks, |memory| {
                assert_eq!(memory.len(), blocks);
                assert!(memory.iter().all(|b| b.as_ref().iter().all(|&x| x == 0)));
            });
        }
        let mut memory = Buffer::with_capacity_in(MAPPED_MIN_BLOCKS, System);
        memory.push(Block::default());
        assert!(memory.capacity() * std::mem::size_of::<Block>() > 32 << 20);
        // Runs one after the other reuse the blocks, and Argon2id gives the
        // same answers in blocks an earlier run left full.
        let first = address(&spare);
        let phc = hash_new(b"secret", params(64, 2, 1, None), &spare).unwrap();
        for _ in 0..2 {
            assert_eq!(matches(b"secret", &phc, &spare), Some(true));
            assert_eq!(matches(b"secreT", &phc, &spare), Some(false));
        }
        assert_eq!(address(&spare), first);
        assert_eq!(spare.kept().len(), 1);
        // A run that needs more replaces a spare too small for it.
        let more = MAPPED_MIN_BLOCKS + 1;
        spare.with_blocks(more, |memory| assert_eq!(memory.len(), more));
        assert_eq!(spare.kept().len(), 1);
        assert!(spare.kept()[0].capacity() >= more);
        // The end of the burst gives them back.
        spare.release();
        assert!(spare.kept().is_empty());
    }

    /// A hasher of 1 MiB, one pass, `concurrency` runs at once.
    fn cheap_hasher(concurrency: &str) -> Arc<Hasher> {
        let config = Config::from_lookup(|name| {
            let value = match name {
                "KEYWARD_REDIS_URL" => "redis://127.0.0.1:1",
                "KEYWARD_ARGON2_MEMORY_KIB" => "1024",
                "KEYWARD_ARGON2_ITERATIONS" => "1",
                "KEYWARD_ARGON2_CONCURRENCY" => concurrency,
                _ => return None,
            };
            Some(value.to_owned())
        })
        .unwrap();
        Arc::new(Hasher::new(&config).unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_run_of_a_burst_frees_the_spare_blocks() {
        let hasher = cheap_hasher("2");
        let secret = Secret::parse(&"s3cret".repeat(8)).unwrap();
        let phc = hasher.hash(&secret).await.unwrap();
        let runs = (0..6).map(|_| {
            let (hasher, secret, phc) = (hasher.clone(), secret.clone(), phc.clone());
            tokio::spawn(async move { hasher.verify(&secret, &phc, None).await })
        });
        for run in futures::future::join_all(runs).await {
            assert_eq!(run.unwrap().unwrap(), Verdict::Match);
        }
        assert!(hasher.spare.kept().is_empty());
    }

    /// The last of a burst to give its place back is a caller that gave up
    /// while it waited (a timeout, a closed connection): its place, given
    /// back by the drop of its future, frees the spare blocks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_caller_that_gives_up_last_frees_the_spare_blocks() {
        let hasher = cheap_hasher("1");
        let secret = Secret::parse(&"s3cret".repeat(8)).unwrap();
        // A place held by the test: the burst goes on past the first run,
        // whose blocks stay spare.
        let held = hasher.admitted.clone().try_acquire_owned().unwrap();
        let phc = hasher.hash(&secret).await.unwrap();
        assert_eq!(hasher.spare.kept().len(), 1);
        // No run may start: the next caller is admitted and waits.
        let no_runs = hasher.running.clone().acquire_owned().await.unwrap();
        let waiting = tokio::spawn({
            let (hasher, secret) = (hasher.clone(), secret.clone());
            async move { hasher.verify(&secret, &phc, None).await }
        });
        while hasher.admitted.available_permits() != hasher.admitted_total - 2 {
            tokio::task::yield_now().await;
        }
        drop(held);
        assert_eq!(hasher.spare.kept().len(), 1, "a place is still held");
        // The waiting caller gives up: the burst is over.
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        assert_eq!(hasher.admitted.available_permits(), hasher.admitted_total);
        assert!(hasher.spare.kept().is_empty());
        drop(no_runs);
    }
}
