//! Prometheus metrics of `serve`. Label names follow policy-server's, so its dashboards'
//! queries carry over with the metric prefix changed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Evaluation {
    pub policy_name: String,
    pub policy_mode: String,
    pub request_origin: String,
    pub resource_kind: String,
    pub resource_request_operation: String,
    pub accepted: String,
    pub mutated: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Rejection {
    pub policy_name: String,
    pub request_origin: String,
    /// The status code the policy gave, empty when it gave none.
    pub error_code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Policy {
    pub policy_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Latency {
    pub policy_name: String,
    pub request_origin: String,
}

type LatencyFamily = Family<Latency, Histogram, fn() -> Histogram>;

/// The instance pool: its fixed size, and how busy it is.
pub struct PoolMetrics {
    pub slots: Gauge,
    pub in_use: Gauge,
    pub waiting: Gauge,
    pub wait_timeouts: Counter,
}

pub struct Metrics {
    pub pool: PoolMetrics,
    registry: Registry,
    evaluations: Family<Evaluation, Counter>,
    rejections: Family<Rejection, Counter>,
    /// Patches refused because the policy may not mutate: the evaluations count the
    /// policy's own verdict (accepted, mutated), as policy-server's do, so this says what
    /// the API server was answered.
    pub mutations_refused: Family<Policy, Counter>,
    latency: LatencyFamily,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~6.5 s: a small pod takes ~0.1 ms, a deadline several seconds.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl Metrics {
    pub fn new(pool: crate::runtime::Pool) -> Self {
        let mut registry = Registry::with_prefix("sidecarctl");
        let slots = Gauge::<i64>::default();
        slots.set(i64::from(pool.instances));
        registry.register(
            "instance_pool_slots",
            "Instance slots: one per worker, the most evaluations at once",
            slots.clone(),
        );
        let slot_memory = Gauge::<i64>::default();
        slot_memory.set(i64::try_from(pool.max_memory).unwrap_or(i64::MAX));
        registry.register(
            "instance_pool_slot_memory_bytes",
            "The most memory one instance may grow to (the largest policy limit)",
            slot_memory,
        );
        let pool = PoolMetrics {
            slots,
            in_use: Gauge::default(),
            waiting: Gauge::default(),
            wait_timeouts: Counter::default(),
        };
        registry.register(
            "instance_pool_in_use",
            "Slots holding an instance now",
            pool.in_use.clone(),
        );
        registry.register(
            "instance_pool_waiting",
            "Requests waiting for a free slot now",
            pool.waiting.clone(),
        );
        registry.register(
            "instance_pool_wait_timeouts",
            "Requests answered 503 because no slot came free in time",
            pool.wait_timeouts.clone(),
        );
        let evaluations = Family::<Evaluation, Counter>::default();
        let rejections = Family::<Rejection, Counter>::default();
        let latency: LatencyFamily = Family::new_with_constructor(latency_histogram);
        registry.register(
            "policy_evaluations",
            "Policy evaluations, by verdict before policyMode applies",
            evaluations.clone(),
        );
        registry.register(
            "policy_rejections",
            "Evaluations the policy rejected (before policyMode applies)",
            rejections.clone(),
        );
        let mutations_refused = Family::<Policy, Counter>::default();
        registry.register(
            "policy_mutations_refused",
            "Patches refused because the policy is not allowed to mutate (allowedToMutate: false): the request was rejected",
            mutations_refused.clone(),
        );
        registry.register(
            "policy_evaluation_latency_seconds",
            "Time to evaluate one request in a fresh instance",
            latency.clone(),
        );
        Metrics {
            pool,
            registry,
            evaluations,
            rejections,
            mutations_refused,
            latency,
        }
    }

    pub fn record(&self, evaluation: Evaluation, error_code: Option<u16>, elapsed: Duration) {
        self.latency
            .get_or_create(&Latency {
                policy_name: evaluation.policy_name.clone(),
                request_origin: evaluation.request_origin.clone(),
            })
            .observe(elapsed.as_secs_f64());
        if evaluation.accepted == "false" {
            self.rejections
                .get_or_create(&Rejection {
                    policy_name: evaluation.policy_name.clone(),
                    request_origin: evaluation.request_origin.clone(),
                    error_code: error_code.map(|c| c.to_string()).unwrap_or_default(),
                })
                .inc();
        }
        self.evaluations.get_or_create(&evaluation).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
