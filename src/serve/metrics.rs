//! Prometheus metrics of `serve`. Label names follow policy-server's, so its dashboards'
//! queries carry over with the metric prefix changed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
pub struct Latency {
    pub policy_name: String,
    pub request_origin: String,
}

type LatencyFamily = Family<Latency, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    evaluations: Family<Evaluation, Counter>,
    rejections: Family<Rejection, Counter>,
    latency: LatencyFamily,
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~6.5 s: a small pod takes ~0.1 ms, a deadline several seconds.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sidecarctl");
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
        registry.register(
            "policy_evaluation_latency_seconds",
            "Time to evaluate one request in a fresh instance",
            latency.clone(),
        );
        Metrics {
            registry,
            evaluations,
            rejections,
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
