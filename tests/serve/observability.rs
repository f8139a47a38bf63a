//! What an operator sees: readiness, metrics per policy, the log of failed evaluations.

use super::*;

#[test]
fn readiness_and_metrics_per_policy() {
    let server = Server::start(json!({
        "mutate": mutator(json!({"allowedToMutate": true})),
        "monitor": mutator(json!({"policyMode": "monitor"})),
    }));
    assert_eq!(server.get("/readiness"), (200, "ready\n".to_string()));
    let plain = review_of(&pod(json!({})), "44444444-0000-0000-0000-000000000001");
    let rejected = review_of(
        &pod(json!({"test.sidecars.dev/reject": "no"})),
        "44444444-0000-0000-0000-000000000002",
    );
    for _ in 0..3 {
        server.review("/validate/mutate", &plain);
    }
    server.review("/validate/monitor", &rejected);
    server.review("/audit/mutate", &rejected);
    let (status, text) = server.get("/metrics");
    assert_eq!(status, 200);
    // The test mutator is not annotated: served, with the warning policy-server's refusal
    // deserves.
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("carries no Kubewarden metadata: policy-server would refuse it")),
        "{:?}",
        server.log()
    );
    let sample = |prefix: &str, labels: &[&str]| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .unwrap_or_else(|| panic!("no {prefix} {labels:?} in\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(
        sample(
            "sidecarctl_policy_evaluations_total{",
            &[
                "policy_name=\"mutate\"",
                "request_origin=\"validate\"",
                "accepted=\"true\"",
                "mutated=\"true\"",
                "resource_kind=\"Pod\"",
                "resource_request_operation=\"CREATE\""
            ]
        ),
        3.0
    );
    // Monitor mode accepted the request; the metric keeps the policy's verdict.
    assert_eq!(
        sample(
            "sidecarctl_policy_rejections_total{",
            &["policy_name=\"monitor\"", "error_code=\"403\""]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "sidecarctl_policy_rejections_total{",
            &["policy_name=\"mutate\"", "request_origin=\"audit\""]
        ),
        1.0
    );
    assert_eq!(
        sample(
            "sidecarctl_policy_evaluation_latency_seconds_count{",
            &["policy_name=\"mutate\"", "request_origin=\"validate\""]
        ),
        3.0
    );
    assert!(text.contains("# TYPE sidecarctl_policy_evaluation_latency_seconds histogram"));
}

/// `--log-fmt json`: one JSON object per event, the failure's fields as keys, as a log
/// pipeline reads policy-server's.
#[test]
fn failed_evaluations_are_logged_as_json() {
    let hostile = module("test-policies/hostile-policy.wasm");
    let server = Server::start_with(
        json!({"trap": {"module": p(&hostile), "settings": {"behaviour": "trap"}}}),
        &["--log-fmt", "json"],
    );
    let review = review_of(&pod(json!({})), "88888888-0000-0000-0000-000000000001");
    assert_eq!(
        server.review("/validate/trap", &review)["status"]["code"],
        500
    );
    let started = std::time::Instant::now();
    let mut events: Vec<Value> = Vec::new();
    while !events.iter().any(|e| e["level"] == "ERROR")
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        // The guest's own output (a panic message) shares stderr, as in policy-server.
        for line in server.log().into_iter().filter(|l| l.starts_with('{')) {
            events.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    let failed = events
        .iter()
        .find(|e| e["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no error event: {events:#?}"));
    assert_eq!(failed["message"], "policy evaluation failed");
    assert_eq!(failed["policy_id"], "trap");
    assert_eq!(
        failed["request_uid"],
        "88888888-0000-0000-0000-000000000001"
    );
    assert_eq!(failed["kind"], "Pod");
    assert_eq!(failed["operation"], "CREATE");
    assert!(
        failed["error"].as_str().unwrap().contains("a wasm trap"),
        "{failed}"
    );
    assert!(events.iter().any(|e| e["message"] == "policy loaded"));
}
