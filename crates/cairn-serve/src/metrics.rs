//! Prometheus metrics: request counts and latency histograms per model version.

use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub version: String,
    pub protocol: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub model: String,
    pub version: String,
}

/// Latency buckets from 50 µs to 2.5 s.
const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct Metrics {
    /// Per-version counts and durations in the form Triton's statistics extension reports.
    pub stats: Mutex<std::collections::BTreeMap<(String, i64), VersionStats>>,
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<VersionLabels, Histogram, fn() -> Histogram>,
    pub shadow_requests: Family<RequestLabels, Counter>,
    pub ready: Family<VersionLabels, Gauge>,
    pub log_dropped: Counter,
    lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let shadow_requests = Family::<RequestLabels, Counter>::default();
        let latency: Family<VersionLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let ready = Family::<VersionLabels, Gauge>::default();
        let log_dropped = Counter::default();
        registry.register(
            "cairn_requests",
            "Prediction requests answered, by model version, protocol and HTTP status",
            requests.clone(),
        );
        registry.register(
            "cairn_shadow_requests",
            "Copies of requests run by shadow versions, by model version and outcome",
            shadow_requests.clone(),
        );
        registry.register(
            "cairn_request_duration_seconds",
            "Time from a prediction request's arrival to its answer, by model version",
            latency.clone(),
        );
        registry.register(
            "cairn_model_ready",
            "1 when a served model version is loaded and ready",
            ready.clone(),
        );
        registry.register(
            "cairn_prediction_log_dropped",
            "Predictions not logged because the log writer fell behind",
            log_dropped.clone(),
        );
        Self {
            stats: Mutex::default(),
            registry,
            requests,
            latency,
            shadow_requests,
            ready,
            log_dropped,
            lock: Mutex::new(()),
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One version's inference statistics (Triton's `/v2/models/NAME/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VersionStats {
    pub success_count: u64,
    pub success_ns: u64,
    pub fail_count: u64,
    pub fail_ns: u64,
    /// Rows run (a batch of 10 rows counts 10 inferences, 1 execution).
    pub inference_count: u64,
    /// When the last request was answered, in milliseconds since the Unix epoch.
    pub last_inference_ms: i64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn record(
        &self,
        model: &str,
        version: i64,
        ok: bool,
        rows: u64,
        duration: std::time::Duration,
        now_ms: i64,
    ) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        let mut stats = self.stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = stats.entry((model.to_owned(), version)).or_default();
        if ok {
            entry.success_count += 1;
            entry.success_ns = entry.success_ns.saturating_add(ns);
            entry.inference_count += rows;
        } else {
            entry.fail_count += 1;
            entry.fail_ns = entry.fail_ns.saturating_add(ns);
        }
        entry.last_inference_ms = now_ms;
    }
}
