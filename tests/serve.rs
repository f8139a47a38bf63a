//! `sidecarctl serve` as the API server meets it: AdmissionReviews posted over real HTTPS
//! (a CA and a server certificate made per test, as a webhook's caBundle), answered by the
//! compiled policies.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const POLICIES: [&str; 4] = ["injector", "lifecycle", "ordering", "resources"];

/// A running `sidecarctl serve`; killed when dropped.
struct Server {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
    stderr: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

/// A CA, and a certificate it signed for localhost and 127.0.0.1.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file, ca_cert.pem())
}

fn spawn(config: &Value, extra: &[&str]) -> (Child, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("policies.yml");
    // JSON is YAML: the file is what policy-server would read.
    std::fs::write(&config_file, serde_json::to_string_pretty(config).unwrap()).unwrap();
    spawn_file(&config_file, dir, extra)
}

fn spawn_file(
    config_file: &Path,
    dir: tempfile::TempDir,
    extra: &[&str],
) -> (Child, tempfile::TempDir, String) {
    let (cert, key, ca) = certificates(dir.path());
    let mut args = vec!["serve", "--config", p(config_file), "--addr", "127.0.0.1:0"];
    if !extra.contains(&"--insecure-plain-http") {
        args.extend(["--cert", p(&cert), "--key", p(&key)]);
    }
    args.extend(extra);
    let child = sidecarctl()
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sidecarctl serve starts");
    (child, dir, ca)
}

impl Server {
    fn start(config: Value) -> Server {
        Server::start_with(config, &[])
    }

    fn start_with(config: Value, extra: &[&str]) -> Server {
        Server::attach(spawn(&config, extra))
    }

    fn start_file(config_file: &Path) -> Server {
        Server::attach(spawn_file(config_file, tempfile::tempdir().unwrap(), &[]))
    }

    fn attach((mut child, dir, ca): (Child, tempfile::TempDir, String)) -> Server {
        let (tx, stderr) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let Some(base) = listening_on(&mut child) else {
            let status = child.wait().unwrap();
            let log: Vec<String> = stderr.try_iter().collect();
            panic!("serve did not start ({status}): {}", log.join("\n"));
        };
        // reqwest builds its rustls config for plain-HTTP clients too.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
        if base.starts_with("https://") {
            builder = builder
                .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
                .https_only(true);
        }
        Server {
            child,
            base,
            client: builder.build().unwrap(),
            stderr,
            _dir: dir,
        }
    }

    fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> (u16, String) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    /// The AdmissionResponse for `review`, checked to be a 200 with an AdmissionReview.
    fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self.post(path, review.to_string());
        assert_eq!(status, 200, "{path}: {body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(
            answer["response"]["uid"], review["request"]["uid"],
            "the uid is echoed"
        );
        answer["response"].clone()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }

    fn log(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The AdmissionReview the API server sends for creating `object`.
fn review_of(object: &Value, uid: &str) -> Value {
    let kind = object["kind"].as_str().unwrap();
    let api_version = object["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = format!("{}s", kind.to_ascii_lowercase());
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"].get("namespace").cloned().unwrap_or(json!("default")),
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}
    })
}

fn mutator(extra: Value) -> Value {
    let mut entry = json!({"module": p(&test_mutator())});
    entry
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    entry
}

fn example_policies() -> PathBuf {
    root().join("examples/serve/policies.yml")
}

#[test]
fn the_example_policies_yml_is_what_scaffold_generates() {
    let config = yaml(&example_policies());
    for policy in POLICIES {
        let crate_name = format!("sidecar-{policy}-policy");
        let entry = &config[format!("clusterwide-sidecar-{policy}")];
        assert_eq!(
            entry["module"],
            format!("../../build/wasm/{crate_name}.wasm")
        );
        assert_eq!(entry["allowedToMutate"], true);
        assert_eq!(
            entry["settings"],
            yaml(&root().join(format!("examples/settings/{crate_name}.yaml"))),
            "{crate_name}: run make examples"
        );
    }
}

#[test]
fn every_policy_answers_over_https_as_run_does() {
    module("wasm/sidecar-ordering-policy.wasm");
    let server = Server::start_file(&example_policies());
    let pods: Vec<PathBuf> = std::fs::read_dir(root().join("examples/pods"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(pods.len() >= 5);
    let dir = tempfile::tempdir().unwrap();
    let mut patched = 0;
    for (n, pod_file) in pods.iter().enumerate() {
        let object = yaml(pod_file);
        let review = review_of(&object, &format!("00000000-0000-0000-0000-{n:012}"));
        let review_file = dir.path().join("review.json");
        std::fs::write(&review_file, review.to_string()).unwrap();
        for policy in POLICIES {
            let crate_name = format!("sidecar-{policy}-policy");
            let response =
                server.review(&format!("/validate/clusterwide-sidecar-{policy}"), &review);
            // The same module and settings through `run`: serve adds nothing in protect
            // mode with mutations allowed.
            let settings = root().join(format!("examples/settings/{crate_name}.yaml"));
            let out = run_policy(
                &module(&format!("wasm/{crate_name}.wasm")),
                &review_file,
                &["-s", p(&settings)],
            );
            let expected: Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(response, expected, "{policy} on {}", pod_file.display());
            if let Some(patch) = response["patch"].as_str() {
                assert_eq!(response["patchType"], "JSONPatch");
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .unwrap();
                let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
                let mut mutated = object.clone();
                json_patch::patch(&mut mutated, &patch).unwrap();
                assert_ne!(mutated, object);
                patched += 1;
            }
        }
    }
    assert!(
        patched >= 3,
        "the examples exercise mutation ({patched} patches)"
    );
    // The built policies are annotated: loaded without a warning.
    let log = server.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains(" INFO policy loaded "))
            .count(),
        4,
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains(" WARN ")), "{log:?}");
}

#[test]
fn monitor_mode_mutation_guard_and_custom_message_follow_policy_server() {
    let server = Server::start(json!({
        "mutate": mutator(json!({"allowedToMutate": true})),
        "guarded": mutator(json!({})),
        "monitor": mutator(json!({"policyMode": "monitor", "allowedToMutate": true})),
        "custom": mutator(json!({"allowedToMutate": true, "message": "ask #platform for an exception"})),
    }));
    let plain = review_of(&pod(json!({})), "11111111-0000-0000-0000-000000000001");
    let rejected = review_of(
        &pod(json!({"test.sidecars.dev/reject": "no sidecar, no service"})),
        "11111111-0000-0000-0000-000000000002",
    );

    let mutated = server.review("/validate/mutate", &plain);
    assert_eq!(mutated["allowed"], true);
    assert_eq!(mutated["patchType"], "JSONPatch");

    let guarded = server.review("/validate/guarded", &plain);
    assert_eq!(guarded["allowed"], false);
    assert!(guarded.get("patch").is_none() && guarded.get("patchType").is_none());
    assert_eq!(
        guarded["status"]["message"],
        "Request rejected by policy guarded. The policy attempted to mutate the request, but it is currently configured to not allow mutations."
    );
    // The evaluations count the policy's own verdict, as policy-server's do
    // (crates/policy-server/src/api/service.rs: `accepted`/`mutated` of the vanilla
    // response); the refused patch is counted on its own.
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("sidecarctl_policy_mutations_refused_total{")
                && l.contains("policy_name=\"guarded\"")
                && l.ends_with(" 1")
        ),
        "{metrics}"
    );
    assert!(
        !metrics.lines().any(
            |l| l.starts_with("sidecarctl_policy_mutations_refused_total{")
                && l.contains("policy_name=\"mutate\"")
        ),
        "{metrics}"
    );

    for review in [&plain, &rejected] {
        let monitored = server.review("/validate/monitor", review);
        assert_eq!(monitored["allowed"], true);
        assert!(monitored.get("patch").is_none() && monitored.get("status").is_none());
    }
    // The audit scanner gets the policy's own verdict, whatever the mode.
    let audited = server.review("/audit/monitor", &rejected);
    assert_eq!(audited["allowed"], false);
    assert_eq!(audited["status"]["message"], "no sidecar, no service");

    let custom = server.review("/validate/custom", &rejected);
    assert_eq!(custom["allowed"], false);
    assert_eq!(
        custom["status"]["message"],
        "ask #platform for an exception"
    );
    assert_eq!(custom["status"]["code"], 403);
    assert_eq!(
        custom["status"]["details"]["causes"],
        json!([{"message": "no sidecar, no service"}])
    );
    assert_eq!(custom["warnings"], json!(["rejected on request"]));
    // An accepted request keeps its patch: the message only replaces rejections.
    assert_eq!(
        server.review("/validate/custom", &plain)["patchType"],
        "JSONPatch"
    );
}

#[test]
fn malformed_requests_get_http_errors_with_a_reason() {
    let server = Server::start_with(
        json!({"null": {"module": p(&null_policy())}}),
        &["--max-body-bytes", "4096"],
    );
    let (status, body) = server.post("/validate/null", "{\"apiVersion\": ");
    assert_eq!(status, 400);
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, body) = server.post("/validate/null", r#"{"kind": "AdmissionReview"}"#);
    assert_eq!(status, 400);
    assert!(body.contains("has no request"), "{body}");
    let review = review_of(&pod(json!({})), "22222222-0000-0000-0000-000000000001");
    let (status, body) = server.post("/validate/nope", review.to_string());
    assert_eq!(status, 404);
    assert!(body.contains("unknown policy \"nope\""), "{body}");
    let mut big = pod(json!({"padding": "x".repeat(8192)}));
    big["metadata"]["name"] = json!("big");
    let (status, _) = server.post("/validate/null", review_of(&big, "u").to_string());
    assert_eq!(status, 413, "a body over --max-body-bytes is refused");
    let (status, _) = server.get("/validate/null");
    assert_eq!(status, 405);
    // None of that disturbed the server.
    assert_eq!(server.review("/validate/null", &review)["allowed"], true);
}

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

#[test]
fn bad_settings_or_modules_stop_the_start() {
    let bad_settings = json!({
        "clusterwide-sidecar-ordering": {
            "module": p(&module("wasm/sidecar-ordering-policy.wasm")),
            "settings": {"mode": "sideways"}
        }
    });
    let missing = json!({"gone": {"module": "/nonexistent/policy.wasm"}});
    let typo = json!({"null": {"module": p(&null_policy()), "allowedToMutat": true}});
    // A limit below the memory the module itself declares could never run it.
    let cramped = json!({"null": {"module": p(&null_policy()), "maxMemoryMib": 1}});
    for (config, expected) in [
        (bad_settings, "policy \"clusterwide-sidecar-ordering\""),
        (missing, "cannot read /nonexistent/policy.wasm"),
        (typo, "unknown field `allowedToMutat`"),
        (
            cramped,
            "MiB of initial memory, more than the 1 MiB its instances may have",
        ),
    ] {
        let (child, _dir, _) = spawn(&config, &[]);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert!(!stdout(&out).contains("listening"));
        let err = stderr(&out);
        assert!(err.contains(expected), "{err}");
        assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1);
    }
}

#[test]
fn a_module_whose_metadata_policy_server_would_refuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let metadata =
        std::fs::read_to_string(root().join("policies/sidecar-ordering-policy/metadata.yml"))
            .unwrap()
            .replace("executionMode: kubewarden-wapc", "executionMode: opa");
    std::fs::write(dir.path().join("metadata.yml"), metadata).unwrap();
    let annotated = dir.path().join("opa.wasm");
    let out = run(&[
        "annotate",
        "-m",
        p(&dir.path().join("metadata.yml")),
        "-o",
        p(&annotated),
        p(&null_policy()),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (child, _dir, _) = spawn(&json!({"opa": {"module": p(&annotated)}}), &[]);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("executionMode \"opa\"; sidecarctl serves kubewarden-wapc policies"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn plain_http_only_when_asked_for() {
    let config = json!({"null": {"module": p(&null_policy())}});
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.yml");
    std::fs::write(&file, config.to_string()).unwrap();
    let out = run(&["serve", "--config", p(&file), "--addr", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--insecure-plain-http"),
        "{}",
        stderr(&out)
    );

    let server = Server::start_with(config, &["--insecure-plain-http"]);
    assert!(server.base.starts_with("http://"));
    let review = review_of(&pod(json!({})), "55555555-0000-0000-0000-000000000001");
    assert_eq!(server.review("/validate/null", &review)["allowed"], true);
}

#[test]
fn sigterm_finishes_the_requests_in_flight() {
    let mut server = Server::start(json!({
        "slow": mutator(json!({"allowedToMutate": true, "timeoutEvalSeconds": 2})),
    }));
    let spin = review_of(
        &pod(json!({"test.sidecars.dev/spin": "true"})),
        "66666666-0000-0000-0000-000000000001",
    );
    let client = server.client.clone();
    let url = format!("{}/validate/slow", server.base);
    let in_flight = std::thread::spawn(move || {
        let response = client.post(url).body(spin.to_string()).send().unwrap();
        let status = response.status().as_u16();
        let mut body = String::new();
        response.take(1 << 20).read_to_string(&mut body).unwrap();
        (status, body)
    });
    // The request is evaluating (it spins until its 2 s deadline) when SIGTERM arrives.
    std::thread::sleep(Duration::from_millis(700));
    let exit = server.terminate();
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["response"]["uid"],
        "66666666-0000-0000-0000-000000000001"
    );
    assert_eq!(answer["response"]["status"]["code"], 500);
    assert!(exit.success(), "{exit}");
    std::thread::sleep(Duration::from_millis(100));
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.contains("finishing requests in flight")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.ends_with(" INFO stopped")), "{log:?}");
}

#[test]
fn every_corpus_request_gets_an_answer_from_every_policy() {
    let Some(dir) = corpus() else { return };
    module("wasm/sidecar-ordering-policy.wasm");
    let server = Server::start_file(&example_policies());
    for (path, document) in corpus_requests(&dir) {
        let review = if document["kind"] == "AdmissionReview" {
            document
        } else {
            json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": document})
        };
        for policy in POLICIES {
            let response =
                server.review(&format!("/validate/clusterwide-sidecar-{policy}"), &review);
            // A rejection is a verdict; a 500 would be the policy failing on a real workload.
            assert_ne!(
                response["status"]["code"],
                500,
                "{policy} on {}: {response}",
                path.display()
            );
        }
    }
}

/// Under load: more requests in flight than workers (the rest wait for one), SIGTERM,
/// and every one of them gets its whole answer before the server exits.
#[test]
fn sigterm_under_load_finishes_every_request_in_flight() {
    let hostile = module("test-policies/hostile-policy.wasm");
    let mut server = Server::start_with(
        json!({"spin": {"module": p(&hostile), "settings": {"behaviour": "spin"}, "timeoutEvalSeconds": 1}}),
        &["--workers", "2"],
    );
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let client = server.client.clone();
            let url = format!("{}/validate/spin", server.base);
            let uid = format!("77777777-0000-0000-0000-{i:012}");
            let review = review_of(&pod(json!({})), &uid);
            std::thread::spawn(move || {
                let response = client.post(url).body(review.to_string()).send().unwrap();
                let status = response.status().as_u16();
                let answer: Value = response.json().unwrap();
                (uid, status, answer)
            })
        })
        .collect();
    // Two evaluate, six wait: four rounds of the 1 s deadline, well inside the grace.
    std::thread::sleep(Duration::from_millis(400));
    let exit = server.terminate();
    for client in clients {
        let (uid, status, answer) = client.join().unwrap();
        assert_eq!(status, 200, "{uid}: {answer}");
        assert_eq!(answer["response"]["uid"], uid.as_str());
        assert_eq!(answer["response"]["status"]["code"], 500, "{answer}");
    }
    assert!(exit.success(), "{exit}");
}

/// A client that sends its headers, or its body, a byte at a time is cut off after the
/// read timeout and holds no worker meanwhile: with one worker, a normal request is
/// answered while four slow clients drip.
#[test]
fn slow_clients_are_cut_off_and_hold_no_worker() {
    use std::io::{Read, Write};
    let server = Server::start_with(
        json!({"calm": {"module": p(&module("test-policies/hostile-policy.wasm"))}}),
        &[
            "--workers",
            "1",
            "--read-timeout",
            "2",
            "--insecure-plain-http",
        ],
    );
    let addr = server.base.trim_start_matches("http://").to_string();
    let start = std::time::Instant::now();
    let slow: Vec<_> = (0..4)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(&addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                // Two slow headers, then two slow bodies.
                let (head, body) = if i < 2 {
                    (format!("POST /validate/calm HTTP/1.1\r\nHost: {addr}\r\n{}", "X-Pad: y\r\n".repeat(20)), String::new())
                } else {
                    (String::new(), format!("POST /validate/calm HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"))
                };
                stream.write_all(body.as_bytes()).unwrap();
                let started = start;
                let drip = if head.is_empty() { "x".repeat(300) } else { head };
                for byte in drip.bytes() {
                    if stream.write_all(&[byte]).is_err() {
                        return started.elapsed();
                    }
                    let mut buf = [0u8; 512];
                    match stream.read(&mut buf) {
                        // Closed, or answered (a body timeout is a 4xx) and closed.
                        Ok(_) => return started.elapsed(),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => return started.elapsed(),
                    }
                    std::thread::sleep(Duration::from_millis(80));
                }
                panic!("slow client {i} was never cut off");
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let review = review_of(&pod(json!({})), "88888888-0000-0000-0000-000000000001");
    assert_eq!(server.review("/validate/calm", &review)["allowed"], true);
    let answered = start.elapsed();
    for (i, s) in slow.into_iter().enumerate() {
        let cut = s.join().unwrap();
        // Answered while every slow client still held its connection: they hold no
        // worker. Cut off near the 2 s timeout, long before the drip would end (8-24 s).
        assert!(
            answered < cut,
            "answered after {answered:?}, client {i} cut after {cut:?}"
        );
        assert!(
            cut < Duration::from_secs(6),
            "slow client {i} cut after {cut:?}"
        );
    }
}

/// One spinning evaluation holds the only worker: a request behind it waits (and
/// `/metrics` shows one slot in use, one request waiting) and is answered once the worker
/// is free; with a short `--pool-wait-ms` it is answered 503 with Retry-After instead,
/// and counted.
#[test]
fn a_request_behind_a_busy_pool_waits_then_is_told_to_retry() {
    let config = |wait: &str| {
        let hostile = module("test-policies/hostile-policy.wasm");
        Server::start_with(
            json!({
                "spin": {"module": p(&hostile), "settings": {"behaviour": "spin"}, "timeoutEvalSeconds": 2},
                "calm": {"module": p(&hostile), "maxMemoryMib": 384},
            }),
            &["--workers", "1", "--pool-wait-ms", wait],
        )
    };
    let spinning = |server: &Server| {
        let client = server.client.clone();
        let url = format!("{}/validate/spin", server.base);
        let review = review_of(&pod(json!({})), "99999999-0000-0000-0000-000000000001");
        let handle = std::thread::spawn(move || {
            client
                .post(url)
                .body(review.to_string())
                .send()
                .unwrap()
                .status()
                .as_u16()
        });
        // The spin has the worker well before the next request comes.
        std::thread::sleep(Duration::from_millis(300));
        handle
    };
    // The pool's figures, in this order: slots, slot memory, in use, waiting, timeouts.
    let pool = |server: &Server| -> [f64; 5] {
        let (_, text) = server.get("/metrics");
        [
            "slots",
            "slot_memory_bytes",
            "in_use",
            "waiting",
            "wait_timeouts_total",
        ]
        .map(|name| {
            let name = format!("sidecarctl_instance_pool_{name}");
            text.lines()
                .find_map(|l| l.strip_prefix(&name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .parse()
                .unwrap()
        })
    };
    // A slot holds the largest limit of any policy, here above the 256 MiB default.
    let slot = (384u64 << 20) as f64;
    let plain = review_of(&pod(json!({})), "99999999-0000-0000-0000-000000000002");

    let server = config("10000");
    let spin = spinning(&server);
    let waiter = {
        let (client, url, body) = (
            server.client.clone(),
            format!("{}/validate/calm", server.base),
            plain.to_string(),
        );
        std::thread::spawn(move || {
            let response = client.post(url).body(body).send().unwrap();
            (response.status().as_u16(), response.text().unwrap())
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pool(&server), [1.0, slot, 1.0, 1.0, 0.0]);
    let (status, body) = waiter.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"allowed\":true"), "{body}");
    assert_eq!(spin.join().unwrap(), 200);
    assert_eq!(pool(&server), [1.0, slot, 0.0, 0.0, 0.0]);
    drop(server);

    let server = config("100");
    let spin = spinning(&server);
    let response = server
        .client
        .post(format!("{}/validate/calm", server.base))
        .body(plain.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let text = response.text().unwrap();
    assert!(
        text.contains("every worker has been busy for 100ms"),
        "{text}"
    );
    assert_eq!(spin.join().unwrap(), 200);
    assert_eq!(pool(&server), [1.0, slot, 0.0, 0.0, 1.0]);
    // Once the worker is free, the same request is served.
    assert_eq!(server.review("/validate/calm", &plain)["allowed"], true);
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
