//! Logging and metrics setup, and every metric name.
//!
//! Both the tracing subscriber and the Prometheus recorder are process-wide:
//! they are installed once per process (the binary at start-up, a test
//! binary on first use), never once per app.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use metrics::{Counter, Gauge, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Metric names. Labels never carry secrets, keys, key ids or raw paths.
pub mod metric {
    /// Counter: HTTP responses, by `route` (the matched route), `method`, `status`.
    pub const HTTP_REQUESTS: &str = "keyward_http_requests_total";
    /// Histogram: HTTP request latency in seconds, by `route`.
    pub const HTTP_DURATION: &str = "keyward_http_request_duration_seconds";
    /// Gauge: HTTP requests in flight.
    pub const HTTP_IN_FLIGHT: &str = "keyward_http_requests_in_flight";
    /// Counter: validations, by `result` and `reason` (the audit values).
    /// Updated only in `validate`.
    pub const VALIDATIONS: &str = "keyward_validations_total";
    /// Counter: validations answered without their audit entry, by `reason`:
    /// `failsafe_open`, or a refusal whose entry Redis did not take.
    /// Updated only in `validate`.
    pub const VALIDATIONS_UNAUDITED: &str = "keyward_validations_unaudited_total";
    /// Counter: Argon2id computations (hash or verify). Updated only in `hash`.
    pub const ARGON2_RUNS: &str = "keyward_argon2_runs_total";
    /// Counter: validations whose secret matched the verified-secret cache
    /// (counted once the document's own checks passed). Updated only in `hash`.
    pub const VERIFY_CACHE_HITS: &str = "keyward_verify_cache_hits_total";
    /// Counter: first-time secrets on this instance found verified before by
    /// the deployment (a verified digest), so without Argon2id. Updated
    /// only in `hash`.
    pub const VERIFY_REMEMBERED: &str = "keyward_verify_remembered_total";
    /// Counter: Redis commands or pipelines that failed.
    /// Updated only in `store`.
    pub const REDIS_ERRORS: &str = "keyward_redis_errors_total";
    /// Gauge: entries in each audit stream, by `stream`, sampled with the
    /// monitor user. Updated only in `store`.
    pub const AUDIT_STREAM_LENGTH: &str = "keyward_audit_stream_length";
    /// Counter: key documents found in Redis that keyward cannot read (the
    /// log names each Redis key). Updated only in `store`.
    pub const UNREADABLE_DOCUMENTS: &str = "keyward_unreadable_documents_total";
    /// Counter: admin writes answered before `KEYWARD_ADMIN_WAIT_REPLICAS`
    /// replicas confirmed them (logged too). Updated only in `store`.
    pub const ADMIN_WRITES_UNCONFIRMED: &str = "keyward_admin_writes_unconfirmed_total";
    /// Counter: admin calls answered without their `audit:admin` entry
    /// (refusals only: a success without one is a 503), by `outcome`.
    /// Updated only in `http::access`.
    pub const ADMIN_UNAUDITED: &str = "keyward_admin_unaudited_total";
    /// Gauge: validations counted in the usage record (a key's hours) that
    /// Redis had not taken at the last flush: what a crash would lose now,
    /// beside the last second's. Updated only in `store`.
    pub const USAGE_PENDING: &str = "keyward_usage_pending";
    /// Counter: validations written to the usage record (a key's hours).
    /// Updated only in `store`.
    pub const USAGE_RECORDED: &str = "keyward_usage_recorded_total";
    /// Counter: validations whose usage record sums were sent again after
    /// their answer was lost (Redis may have run them), per flush the most
    /// of any kind of series (a key's or a project's hours, days, months):
    /// an upper bound on what any one series, or the sum of one kind's,
    /// over-counts. Updated only in `store`.
    pub const USAGE_RESENT: &str = "keyward_usage_resent_total";
    /// Counter: usage record writes dropped because Redis refuses them for
    /// good, by `reason` (`noperm`: the validator's ACL lacks the record;
    /// `wrongtype`; `not_a_count`: a field that is not a whole number, or a
    /// sum that would overflow). Updated only in `store`.
    pub const USAGE_DROPPED: &str = "keyward_usage_dropped_total";
    /// Counter: log lines dropped because stderr took none while
    /// `LOG_LINES_BUFFERED` waited. Updated only in `telemetry`.
    pub const LOG_LINES_DROPPED: &str = "keyward_log_lines_dropped_total";
    /// Histogram: Redis pipeline round-trip time in seconds. Updated only in `store`.
    pub const REDIS_ROUNDTRIP: &str = "keyward_redis_roundtrip_seconds";
    /// Webhook delivery attempts, by `result` (`delivered`, `retry`,
    /// `given_up`, `gone`, `dropped`).
    pub const WEBHOOK_ATTEMPTS: &str = "keyward_webhook_attempts_total";
    /// Webhook events Redis did not take, by `type` (the answer or the
    /// admin change stands; see ARCHITECTURE.md, "Webhooks").
    pub const EVENTS_LOST: &str = "keyward_webhook_events_lost_total";
}

/// Latency buckets in seconds: sub-millisecond warm validations up to
/// Argon2id-bound cold ones and timeouts.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Log lines waiting for stderr before new ones are dropped (and counted).
const LOG_LINES_BUFFERED: usize = 16_384;

/// Lines dropped because stderr took none (see [`init_tracing`]).
static LOG_LINES_DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global tracing subscriber. Call once, from the binary, and
/// hold the guard it returns until exit: dropping it writes what is queued
/// (waiting at most about a second for a reader that takes nothing).
///
/// Lines reach stderr from a thread of their own. A reader that stops
/// taking them (a full pipe, a stalled log collector) makes them queue, up
/// to [`LOG_LINES_BUFFERED`], and then drop, counted in
/// `keyward_log_lines_dropped_total`: it never blocks the threads that
/// answer.
pub fn init_tracing(format: LogFormat, filter: &str) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_LINES_BUFFERED)
        .lossy(true)
        .thread_name("keyward-log")
        .finish(std::io::stderr());
    let _ = LOG_LINES_DROPPED.set(writer.error_counter());
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    if let Err(e) = result {
        eprintln!("keyward: tracing subscriber already installed: {e}");
    }
    guard
}

/// `/metrics`' text, with the log lines dropped so far.
pub fn render(handle: &PrometheusHandle) -> String {
    if let Some(dropped) = LOG_LINES_DROPPED.get() {
        metrics::counter!(metric::LOG_LINES_DROPPED).absolute(dropped.dropped_lines() as u64);
    }
    handle.render()
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Histograms (not summaries), so latency aggregates across instances.
            let histogram = Matcher::Suffix("_seconds".into());
            PrometheusBuilder::new()
                .set_buckets_for_metric(histogram, LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("no other metrics recorder is installed in this process")
        })
        .clone()
}

/// A metric's handles, kept by the values of its `N` labels once the
/// Prometheus recorder is installed, so that recording on the validation
/// path skips the recorder's registry (a `Vec` of labels made, the name and
/// labels hashed, a lock, a reference count) and costs one lookup here.
/// Label values are `&'static str` of a bounded set (routes, statuses,
/// reasons), kept by address and length: equal addresses are equal values,
/// and a value met at two addresses is only kept twice. Before the recorder
/// is installed, every use asks the recorder (a handle made then would be a
/// no-op for good).
pub struct Handles<H, const N: usize> {
    name: &'static str,
    keys: [&'static str; N],
    made: OnceLock<RwLock<HashMap<Values<N>, H>>>,
}

/// Label values by address and length.
type Values<const N: usize> = [(usize, usize); N];

/// How a handle of each kind is made.
pub trait Handle: Sized {
    fn make(name: &'static str, labels: Vec<Label>) -> Self;
}

impl Handle for Counter {
    fn make(name: &'static str, labels: Vec<Label>) -> Self {
        metrics::counter!(name, labels)
    }
}

impl Handle for Gauge {
    fn make(name: &'static str, labels: Vec<Label>) -> Self {
        metrics::gauge!(name, labels)
    }
}

impl Handle for Histogram {
    fn make(name: &'static str, labels: Vec<Label>) -> Self {
        metrics::histogram!(name, labels)
    }
}

impl<H: Handle, const N: usize> Handles<H, N> {
    /// The metric `name`, labelled `keys` (in this order).
    pub const fn new(name: &'static str, keys: [&'static str; N]) -> Self {
        Self {
            name,
            keys,
            made: OnceLock::new(),
        }
    }

    /// Calls `f` with the handle for these label `values`.
    pub fn with(&self, values: [&'static str; N], f: impl FnOnce(&H)) {
        let make = || {
            let labels = self.keys.iter().zip(values);
            H::make(
                self.name,
                labels
                    .map(|(k, v)| Label::from_static_parts(k, v))
                    .collect(),
            )
        };
        if HANDLE.get().is_none() {
            return f(&make());
        }
        let made = self.made.get_or_init(Default::default);
        let at = values.map(|v| (v.as_ptr() as usize, v.len()));
        let read = made.read().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = read.get(&at) {
            return f(handle);
        }
        drop(read);
        let mut made = made.write().unwrap_or_else(|e| e.into_inner());
        f(made.entry(at).or_insert_with(make))
    }
}
