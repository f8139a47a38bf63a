//! Policies that misbehave fail their own requests, and nothing else: deadlines, hostile
//! modules, memory limits.

use super::*;

#[test]
fn a_policy_past_its_deadline_is_rejected_with_500_and_the_server_carries_on() {
    let server = Server::start(json!({
        "slow": mutator(json!({"allowedToMutate": true, "timeoutEvalSeconds": 1})),
    }));
    let spin = review_of(
        &pod(json!({"test.sidecars.dev/spin": "true"})),
        "33333333-0000-0000-0000-000000000001",
    );
    let started = std::time::Instant::now();
    let response = server.review("/validate/slow", &spin);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 500);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(message.contains("exceeded its 1s deadline"), "{message}");
    // Not a speed assertion: only that the policy's deadline, not the client's 30 s, ended it.
    assert!(started.elapsed() < Duration::from_secs(20));
    let plain = review_of(&pod(json!({})), "33333333-0000-0000-0000-000000000002");
    assert_eq!(server.review("/validate/slow", &plain)["allowed"], true);
}

/// Modules that loop, grow memory without end, overflow their stack, trap, answer 50 MB,
/// call the host in a loop, hand it a span outside their memory or fail with an error that
/// reads like a deadline: each fails its own request with policy-server's 500, the
/// next request and the other policies are served, the server's memory stays bounded and
/// `/metrics` counts every failure.
#[test]
fn hostile_modules_are_contained() {
    let hostile = module("test-policies/hostile-policy.wasm");
    let behaviours = [
        "spin",
        "grow",
        "stack",
        "trap",
        "huge",
        "hostcalls",
        "pointers",
        "deadlineWords",
    ];
    let mut config = serde_json::Map::new();
    for b in behaviours {
        config.insert(
            format!("hostile-{b}"),
            json!({"module": p(&hostile), "settings": {"behaviour": b}, "timeoutEvalSeconds": 1}),
        );
    }
    config.insert("calm".into(), json!({"module": p(&hostile)}));
    config.insert("mutate".into(), mutator(json!({"allowedToMutate": true})));
    let server = Server::start_with(Value::Object(config), &["--max-memory-mib", "64"]);
    let plain = review_of(&pod(json!({})), "55555555-0000-0000-0000-000000000001");
    let mut failures = Vec::new();
    for b in behaviours {
        for round in 0..2 {
            let response = server.review(&format!("/validate/hostile-{b}"), &plain);
            assert_eq!(response["allowed"], false, "{b}: {response}");
            assert_eq!(response["status"]["code"], 500, "{b}: {response}");
            let message = response["status"]["message"].as_str().unwrap_or_default();
            let expected = match b {
                "spin" | "hostcalls" => "exceeded its 1s deadline",
                "huge" => "plus twice the request an answer may have",
                "pointers" => {
                    "__guest_response: 4096 bytes at offset 4294901760 are outside the guest's memory"
                }
                // The guest's own error, though its words read like the host's deadline.
                "deadlineWords" => {
                    "the policy failed in validate: execution deadline exceeded, says the policy"
                }
                _ => "a wasm trap",
            };
            assert!(message.contains(expected), "{b} (round {round}): {message}");
            failures.push((b, expected));
            // The next request, to other policies, is served as ever.
            assert_eq!(
                server.review("/validate/calm", &plain)["allowed"],
                true,
                "{b}"
            );
            let mutated = server.review("/validate/mutate", &plain);
            assert_eq!(mutated["allowed"], true, "{b}: {mutated}");
            assert!(mutated["patch"].is_string(), "{b}: {mutated}");
        }
    }
    // The operator sees which policy failed, on which request, and why: one error line
    // per failed evaluation.
    let mut log = Vec::new();
    let logged = |log: &[String], (b, expected): (&str, &str)| {
        log.iter()
            .filter(|l| {
                l.contains(" ERROR policy evaluation failed ")
                    && l.contains(&format!("policy_id=hostile-{b} "))
                    && l.contains("request_uid=\"55555555-0000-0000-0000-000000000001\"")
                    && l.contains(expected)
            })
            .count()
    };
    let started = std::time::Instant::now();
    while failures.iter().any(|&f| logged(&log, f) < 2)
        && started.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
        log.extend(server.log());
    }
    for &failure in &failures {
        assert_eq!(logged(&log, failure), 2, "{failure:?}: {log:#?}");
    }
    let (_, text) = server.get("/metrics");
    for b in behaviours {
        let counted = text.lines().any(|l| {
            l.starts_with("sidecarctl_policy_rejections_total{")
                && l.contains(&format!("policy_name=\"hostile-{b}\""))
                && l.contains("error_code=\"500\"")
                && l.ends_with(" 2")
        });
        assert!(counted, "hostile-{b} not counted twice:\n{text}");
    }
    // A module that allocated without end took 64 MiB at most, and gave it back.
    let rss = resident_kib(server.child.id());
    assert!(
        rss < 512 * 1024,
        "serve holds {rss} KiB after the hostile modules"
    );
}

/// A process's resident memory, in KiB (Linux).
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `maxMemoryMib` in policies.yml bounds one policy's instances: the same module, given a
/// request of a few MiB, fails it under an 8 MiB limit and answers it under the default.
#[test]
fn a_policy_memory_limit_of_its_own() {
    let server = Server::start_with(
        json!({
            "cramped": {"module": p(&null_policy()), "maxMemoryMib": 8},
            "roomy": {"module": p(&null_policy())},
        }),
        &["--max-body-bytes", "16777216"],
    );
    let big = review_of(
        &pod(json!({"test.sidecars.dev/padding": "x".repeat(6 << 20)})),
        "99999999-0000-0000-0000-000000000003",
    );
    let roomy = server.review("/validate/roomy", &big);
    assert_eq!(roomy["allowed"], true, "{}", roomy["status"]);
    let cramped = server.review("/validate/cramped", &big);
    assert_eq!(cramped["allowed"], false);
    assert_eq!(cramped["status"]["code"], 500);
    let message = cramped["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("a wasm trap"), "{message}");
    let small = review_of(&pod(json!({})), "99999999-0000-0000-0000-000000000004");
    assert_eq!(server.review("/validate/cramped", &small)["allowed"], true);
    assert!(
        server.log().iter().any(
            |l| l.contains("policy loaded policy_id=cramped") && l.contains("max_memory_mib=8")
        ),
        "{:?}",
        server.log()
    );
}
