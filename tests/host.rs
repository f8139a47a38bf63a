//! sidecarctl as a user runs it: real wasm modules, the real binary, real exit codes.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use serde_json::{Value, json};

fn response_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(output),
            stderr(output)
        )
    })
}

/// What policy-server writes for a policy answer, computed here from its rules
/// (admission_response.rs in policy-evaluator) rather than by sidecarctl's code.
fn policy_server_response(
    uid: &str,
    original: &Value,
    mutated: Option<&Value>,
    audit: Value,
    warnings: Value,
) -> String {
    let mut out = format!("{{\"uid\":{},\"allowed\":true", json!(uid));
    if let Some(m) = mutated {
        let diff = json_patch::diff(original, m);
        if !diff.0.is_empty() {
            let patch = STANDARD.encode(serde_json::to_string(&diff).unwrap());
            out.push_str(&format!(
                ",\"patchType\":\"JSONPatch\",\"patch\":\"{patch}\""
            ));
        }
    }
    out.push_str(&format!(
        ",\"auditAnnotations\":{audit},\"warnings\":{warnings}}}"
    ));
    out
}

#[test]
fn null_policy_answer_is_byte_for_byte_policy_servers() {
    let review = fixture("delete-review.json");
    let out = run(&["run", "-p", p(&null_policy()), "-r", p(&review)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim_end(),
        r#"{"uid":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","allowed":true,"auditAnnotations":null,"warnings":null}"#
    );
}

#[test]
fn test_mutator_patch_is_byte_for_byte_policy_servers() {
    let out = run_policy(&test_mutator(), &fixture("pod.yaml"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let response: Value = serde_json::from_str(&text).unwrap();
    let uid = response["uid"].as_str().unwrap();
    // The fixture as the API server would send it, and the label the mutator adds.
    let original = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
    let mut mutated = original.clone();
    mutated["metadata"]["labels"] = json!({"sidecars.dev/test-mutator": "applied"});
    let expected = policy_server_response(
        uid,
        &original,
        Some(&mutated),
        json!({"sidecars.dev/test-mutator": "sidecars.dev/test-mutator"}),
        json!(["test-mutator: added label sidecars.dev/test-mutator"]),
    );
    assert_eq!(text.trim_end(), expected);
    // The patch, decoded, is the one operation the change needs.
    let patch = STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(patch).unwrap(),
        r#"[{"op":"add","path":"/metadata/labels","value":{"sidecars.dev/test-mutator":"applied"}}]"#
    );
}

#[test]
fn a_conforming_object_gets_no_patch() {
    let out = run_policy(&test_mutator(), &fixture("pod-labelled.json"), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = response_of(&out);
    assert_eq!(r["allowed"], true);
    assert!(
        r.get("patch").is_none() && r.get("patchType").is_none(),
        "{r}"
    );
}

#[test]
fn mutating_a_delete_is_rejected_as_policy_server_does() {
    let out = run_policy(&test_mutator(), &fixture("delete-review.json"), &[]);
    // The mutator answers a DELETE (object null) with a mutated object anyway.
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim_end(),
        r#"{"uid":"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0","allowed":false,"status":{"message":"Incoming object is null, which happens only with DELETE operations, but the policy is attempting a mutation. This is not allowed"},"auditAnnotations":null,"warnings":null}"#
    );
}

#[test]
fn settings_are_validated_before_the_first_evaluation() {
    let pod = fixture("pod.yaml");
    let out = run_policy(
        &test_mutator(),
        &pod,
        &["--settings-json", r#"{"label": "x"}"#],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("settings are not valid: label \"x\" must be key=value"),
        "{}",
        stderr(&out)
    );

    let typo = run_policy(
        &test_mutator(),
        &pod,
        &["--settings-json", r#"{"lable": "a=b"}"#],
    );
    assert_eq!(typo.status.code(), Some(2));
    assert!(
        stderr(&typo).contains("unknown field `lable`"),
        "{}",
        stderr(&typo)
    );

    let custom = run_policy(
        &test_mutator(),
        &pod,
        &["--settings-json", r#"{"label": "team=mesh"}"#],
    );
    assert!(custom.status.success());
    let patched = response_of(&custom);
    let patch =
        String::from_utf8(STANDARD.decode(patched["patch"].as_str().unwrap()).unwrap()).unwrap();
    assert!(patch.contains(r#""team":"mesh""#), "{patch}");
}

#[test]
fn input_shapes_and_stdin() {
    let pod = std::fs::read_to_string(fixture("pod.yaml")).unwrap();
    let from_stdin = run_with_stdin(&["run", "-p", p(&null_policy()), "-r", "-"], &pod);
    assert!(from_stdin.status.success(), "{}", stderr(&from_stdin));
    let from_file = run_policy(&null_policy(), &fixture("pod.yaml"), &[]);
    assert_eq!(
        from_stdin.stdout, from_file.stdout,
        "the same object gives the same uid and answer"
    );

    let yaml = run_policy(&test_mutator(), &fixture("pod.yaml"), &["-o", "yaml"]);
    assert!(
        stdout(&yaml).contains("patchType: JSONPatch"),
        "{}",
        stdout(&yaml)
    );
    let pretty = run_policy(&test_mutator(), &fixture("pod.yaml"), &["-o", "pretty"]);
    let text = stdout(&pretty);
    assert!(text.starts_with("ALLOWED (mutated)\n"), "{text}");
    assert!(
        text.contains("warning: test-mutator: added label"),
        "{text}"
    );
    assert!(
        text.contains("+  labels:\n+    sidecars.dev/test-mutator: applied"),
        "{text}"
    );
    assert!(text.ends_with('\n'), "{text:?}");
    // No warnings, no patch: the verdict alone, a line like any other.
    let plain = run_policy(&null_policy(), &fixture("pod.yaml"), &["-o", "pretty"]);
    assert_eq!(stdout(&plain), "ALLOWED\n");
}

#[test]
fn rejections_carry_message_code_and_warnings() {
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "annotations": {"test.sidecars.dev/reject": "no proxies here"}}, "spec": {"containers": [{"name": "a", "image": "b"}]}}"#;
    let out = run_with_stdin(&["run", "-p", p(&test_mutator()), "-r", "-"], pod);
    assert!(out.status.success());
    let r = response_of(&out);
    assert_eq!(r["allowed"], false);
    assert_eq!(
        r["status"],
        json!({"message": "no proxies here", "code": 403})
    );
    assert_eq!(r["warnings"], json!(["rejected on request"]));
}

#[test]
fn bad_inputs_are_one_line_and_exit_2() {
    let pod = fixture("pod.yaml");
    let empty_module =
        std::env::temp_dir().join(format!("sidecarctl-empty-{}.wasm", std::process::id()));
    // The smallest valid module: magic and version, no exports.
    std::fs::write(&empty_module, b"\0asm\x01\0\0\0").unwrap();
    let (null, mutator, broken, trap, configmap) = (
        null_policy(),
        test_mutator(),
        fixture("broken.yaml"),
        fixture("pod-trap.yaml"),
        fixture("configmap.yaml"),
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "-p", "/nonexistent/policy.wasm", "-r", p(&pod)],
            "cannot read /nonexistent/policy.wasm",
        ),
        (
            vec!["run", "-p", p(&null), "-r", "/nonexistent/pod.yaml"],
            "cannot read /nonexistent/pod.yaml",
        ),
        (
            vec!["run", "-p", p(&null), "-r", p(&broken)],
            "broken.yaml: invalid YAML",
        ),
        (
            vec!["run", "-p", p(&pod), "-r", p(&pod)],
            "is not a WebAssembly module",
        ),
        (
            vec!["run", "-p", p(&empty_module), "-r", p(&pod)],
            "is not a waPC policy: it does not export __guest_call",
        ),
        (
            vec![
                "run",
                "-p",
                p(&null),
                "-r",
                p(&pod),
                "--settings-json",
                "{nope",
            ],
            "--settings-json: invalid JSON",
        ),
        (
            vec!["run", "-p", p(&mutator), "-r", p(&trap)],
            "the policy failed in validate",
        ),
        (
            vec!["explain", p(&configmap)],
            "a ConfigMap holds no pod spec",
        ),
        (vec!["explain", p(&broken)], "invalid YAML"),
        (
            vec!["test", "/nonexistent/suites"],
            "no such file or directory",
        ),
    ];
    for (args, expected) in cases {
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: one line expected, got: {err}"
        );
        assert!(
            err.starts_with("error: ") && err.contains(expected),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
    }
    let _ = std::fs::remove_file(empty_module);
}

#[test]
fn a_trap_answers_500_like_policy_server() {
    let out = run_policy(&test_mutator(), &fixture("pod-trap.yaml"), &[]);
    assert_eq!(out.status.code(), Some(2));
    let r = response_of(&out);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 500);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("internal server error: "),
        "{r}"
    );
}

#[test]
fn an_endless_policy_is_stopped_at_its_deadline() {
    let started = std::time::Instant::now();
    let out = run_policy(
        &test_mutator(),
        &fixture("pod-spin.yaml"),
        &["--timeout-ms", "300"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exceeded its 300ms deadline"),
        "{}",
        stderr(&out)
    );
    let r = response_of(&out);
    assert_eq!(r["status"]["code"], 500);
    // Not a timing assertion on speed: only that the deadline, not the test harness, ended it.
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn compiled_modules_are_cached_by_digest() {
    let dir = tempfile::tempdir().unwrap();
    let out = sidecarctl()
        .env("SIDECARCTL_CACHE_DIR", dir.path())
        .args([
            "run",
            "-p",
            p(&null_policy()),
            "-r",
            p(&fixture("pod.yaml")),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    use sha2::Digest;
    let digest: String = sha2::Sha256::digest(std::fs::read(null_policy()).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        files[0].starts_with(&digest) && files[0].ends_with(".cwasm"),
        "{files:?}"
    );
    // A second run loads the cached module and answers the same.
    let again = sidecarctl()
        .env("SIDECARCTL_CACHE_DIR", dir.path())
        .args([
            "run",
            "-p",
            p(&null_policy()),
            "-r",
            p(&fixture("pod.yaml")),
        ])
        .output()
        .unwrap();
    assert_eq!(again.stdout, out.stdout);
    // A corrupt cache entry is recompiled, not trusted.
    std::fs::write(dir.path().join(&files[0]), b"garbage").unwrap();
    let repaired = sidecarctl()
        .env("SIDECARCTL_CACHE_DIR", dir.path())
        .args([
            "run",
            "-p",
            p(&null_policy()),
            "-r",
            p(&fixture("pod.yaml")),
        ])
        .output()
        .unwrap();
    assert_eq!(repaired.stdout, out.stdout, "{}", stderr(&repaired));
}

#[test]
fn every_corpus_request_through_real_wasm() {
    let Some(dir) = corpus() else { return };
    let requests = corpus_requests(&dir);
    for (path, request) in &requests {
        let null = run(&["run", "-p", p(&null_policy()), "-r", p(path)]);
        assert!(
            null.status.success(),
            "{}: {}",
            path.display(),
            stderr(&null)
        );
        let r = response_of(&null);
        assert_eq!(r["uid"], request["uid"]);
        assert_eq!(r["allowed"], true, "{}", path.display());

        let out = run(&["run", "-p", p(&test_mutator()), "-r", p(path)]);
        assert!(out.status.success(), "{}: {}", path.display(), stderr(&out));
        let r = response_of(&out);
        let patch: json_patch::Patch =
            serde_json::from_slice(&STANDARD.decode(r["patch"].as_str().unwrap()).unwrap())
                .unwrap();
        let mut patched = request["object"].clone();
        json_patch::patch(&mut patched, &patch).unwrap();
        let mut expected = request["object"].clone();
        expected["metadata"]
            .as_object_mut()
            .unwrap()
            .entry("labels")
            .or_insert(json!({}))["sidecars.dev/test-mutator"] = json!("applied");
        assert_eq!(patched, expected, "{}", path.display());
    }
    assert!(
        requests.len() > 40,
        "only {} corpus requests",
        requests.len()
    );
}

#[test]
fn suites_report_failures_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("wrong.suite.yaml");
    std::fs::write(
        &suite,
        format!(
            "policy: {}\ncases:\n  - name: expects a rejection\n    request: {}\n    expect: {{allowed: false}}\n  - name: expects the label\n    request: {}\n    expect:\n      jsonpath: [{{path: \"$.metadata.labels.missing\", equals: x}}]\n  - name: passes\n    request: {}\n    expect: {{allowed: true, patched: true}}\n",
            p(&test_mutator()),
            p(&fixture("pod.yaml")),
            p(&fixture("pod.yaml")),
            p(&fixture("pod.yaml")),
        ),
    )
    .unwrap();
    let out = run(&["test", p(dir.path())]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL ")
            && text.contains("expects a rejection: allowed: expected false, got true"),
        "{text}"
    );
    assert!(
        text.contains("$.metadata.labels.missing: no match"),
        "{text}"
    );
    assert!(
        text.contains("PASS ") && text.contains("::passes"),
        "{text}"
    );
    assert_eq!(text.lines().last(), Some("1 passed, 2 failed"));

    std::fs::write(
        &suite,
        "policy: x.wasm\ncases:\n  - name: a\n    expekt: {}\n",
    )
    .unwrap();
    let bad = run(&["test", p(&suite)]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("not a test suite"),
        "{}",
        stderr(&bad)
    );
}

/// A case whose expectations cannot fail would pass whatever the policy does: refused.
#[test]
fn suites_refuse_checks_that_cannot_fail() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("hollow.suite.yaml");
    std::fs::write(
        &suite,
        format!(
            "policy: {}\ncases:\n  - name: expects nothing\n    request: {pod}\n    expect: {{}}\n  - name: a path with no check\n    request: {pod}\n    expect:\n      jsonpath: [{{path: \"$.metadata.labels\"}}]\n  - name: a path that is no JSONPath\n    request: {pod}\n    expect:\n      jsonpath: [{{path: \"$.spec[\", exists: true}}]\n  - name: equals null is a check\n    request: {pod}\n    expect:\n      jsonpath: [{{path: \"$.spec.nodeName\", equals: null}}]\n",
            p(&test_mutator()),
            pod = p(&fixture("pod.yaml")),
        ),
    )
    .unwrap();
    let out = run(&["test", p(&suite)]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for part in [
        "expects nothing: expect checks nothing, so the case would pass whatever the policy does",
        "a path with no check: jsonpath \"$.metadata.labels\" checks nothing: give it equals, exists or count",
        "a path that is no JSONPath: jsonpath \"$.spec[\" is not RFC 9535",
        // `equals: null` is read as a check for null, which fails on an absent field.
        "equals null is a check: $.spec.nodeName: no match, expected null",
    ] {
        assert!(text.contains(part), "{part}\n{text}");
    }
    assert_eq!(text.lines().last(), Some("0 passed, 4 failed"));
}

#[test]
fn bench_reports_every_mode_with_ratios_to_the_baseline() {
    let out = run(&[
        "bench",
        "--baseline",
        p(&null_policy()),
        "-p",
        p(&test_mutator()),
        "-r",
        p(&fixture("pod.yaml")),
        "--samples",
        "5",
        "--warmup",
        "1",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    // 2 policies x (validate, validate_settings) x (fresh, reused)
    assert_eq!(rows.len(), 8, "{rows:?}");
    for row in &rows {
        assert_eq!(row["samples"], 5);
        assert!(row["minUs"].as_f64().unwrap() <= row["medianUs"].as_f64().unwrap());
        assert!(row["medianUs"].as_f64().unwrap() <= row["p99Us"].as_f64().unwrap());
        assert!(row["perSecond"].as_f64().unwrap() > 0.0);
        if row["policy"] == "null-policy" {
            assert_eq!(row["ratio"], 1.0);
        } else {
            assert!(row["ratio"].as_f64().unwrap() > 0.0);
        }
    }
    let modes: Vec<&str> = rows
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert!(modes.contains(&"fresh") && modes.contains(&"reused"));
    // The instantiation figure: each fresh row over the reused row of the same policy and
    // operation.
    for row in rows.iter().filter(|r| r["instance"] == "fresh") {
        let reused = rows
            .iter()
            .find(|r| {
                r["instance"] == "reused"
                    && r["policy"] == row["policy"]
                    && r["operation"] == row["operation"]
            })
            .unwrap();
        let expected = row["medianUs"].as_f64().unwrap() / reused["medianUs"].as_f64().unwrap();
        let ratio = row["freshOverReused"].as_f64().unwrap();
        assert!((ratio - expected).abs() < 1e-9, "{row}");
        assert!(reused.get("freshOverReused").is_none(), "{reused}");
    }
    let text = run(&[
        "bench",
        "-p",
        p(&null_policy()),
        "-r",
        p(&fixture("pod.yaml")),
        "--samples",
        "3",
    ]);
    let text = stdout(&text);
    assert!(
        text.contains("instantiation: a fresh instance per request"),
        "{text}"
    );
    assert!(text.contains("worst fresh/reused: "), "{text}");
    // A policy that fails is an error, not a figure.
    let failing = run(&[
        "bench",
        "-p",
        p(&test_mutator()),
        "-r",
        p(&fixture("pod-trap.yaml")),
        "--samples",
        "2",
    ]);
    assert_eq!(failing.status.code(), Some(2));
}

/// A pool of one slot holds one instance: a second, while the first lives, is refused as
/// the pool's, not as a broken module; once the first is gone, a third is made.
#[test]
fn an_exhausted_pool_says_so() {
    use sidecarctl::runtime::{DEFAULT_MAX_MEMORY, DEFAULT_TIMEOUT, HostError, Pool, Runtime};
    let runtime = Runtime::pooled(Pool {
        instances: 1,
        max_memory: DEFAULT_MAX_MEMORY,
    })
    .unwrap();
    let bytes = std::fs::read(null_policy()).unwrap();
    let policy = runtime
        .load_bytes("null-policy", &bytes, DEFAULT_TIMEOUT)
        .unwrap();
    let first = policy.instantiate().unwrap();
    let second = policy.instantiate().map(|_| ()).unwrap_err();
    assert!(matches!(second, HostError::PoolExhausted), "{second}");
    drop(first);
    assert!(policy.instantiate().is_ok());
}

/// A suite or a request that cannot be what it says is bad input (one line, exit 2), not a
/// failed case; a byte-order mark from an editor is not part of the file; a List is
/// refused as the API server would never send one.
#[test]
fn suites_and_requests_with_bad_input_are_refused_and_a_bom_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (null, pod) = (null_policy(), fixture("pod.yaml"));
    let suite = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let case = |request: &str| {
        format!("cases:\n  - name: a\n    request: {request}\n    expect: {{allowed: true}}\n")
    };
    let bom = suite(
        "bom.suite.yaml",
        format!("\u{feff}policy: {}\n{}", p(&null), case(p(&pod))),
    );
    let out = run(&["test", p(&bom)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bad = [
        (
            suite(
                "empty.suite.yaml",
                format!("policy: {}\ncases: []\n", p(&null)),
            ),
            "the suite has no cases".to_string(),
        ),
        (
            suite(
                "missing.suite.yaml",
                format!("policy: {}\n{}", p(&null), case("nope.yaml")),
            ),
            "missing.suite.yaml: case \"a\": cannot read".to_string(),
        ),
        (
            suite(
                "notwasm.suite.yaml",
                format!("policy: {}\n{}", p(&pod), case(p(&pod))),
            ),
            "notwasm.suite.yaml: case \"a\": ".to_string()
                + p(&pod)
                + " is not a WebAssembly module",
        ),
    ];
    for (file, expected) in bad {
        let out = run(&["test", p(&file)]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&expected), "{err}");
    }
    let list = dir.path().join("list.yaml");
    std::fs::write(
        &list,
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: a, image: x}]}\n",
    )
    .unwrap();
    for command in [
        vec!["run", "-p", p(&null), "-r", p(&list)],
        vec!["review", p(&list)],
    ] {
        let out = run(&command);
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        assert!(
            stderr(&out)
                .contains("a List holds several objects, and the API server admits each one alone"),
            "{}",
            stderr(&out)
        );
    }
}

/// `scaffold manifest` asks the policy's `validate_settings` before it writes a manifest:
/// settings the policy would refuse at start-up make no manifest.
#[test]
fn scaffold_refuses_settings_the_policy_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let policy = module("wasm/sidecar-lifecycle-policy.wasm");
    let settings = dir.path().join("settings.yaml");
    std::fs::write(&settings, "rules: {startup-probes: deny}\n").unwrap();
    let args = [
        "scaffold",
        "manifest",
        "-t",
        "ClusterAdmissionPolicy",
        p(&policy),
        "-s",
        p(&settings),
    ];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("settings.yaml: ") && err.contains("refuses these settings: invalid settings: rules.startup-probes: unknown field `startup-probes`"),
        "{err}"
    );
    std::fs::write(&settings, "rules: {startup-probe: deny}\n").unwrap();
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("startup-probe: deny"),
        "{}",
        stdout(&out)
    );
}

/// Every error names what it is about: the file that is no module (whichever command read
/// it), the file whose object is malformed, where the settings came from.
#[test]
fn errors_name_their_file() {
    let (pod, null) = (fixture("pod.yaml"), null_policy());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("policies.yml");
    std::fs::write(&config, format!("p:\n  module: {}\n", p(&pod))).unwrap();
    let malformed = dir.path().join("malformed.yaml");
    std::fs::write(
        &malformed,
        "kind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: 5}]}\n",
    )
    .unwrap();
    let not_wasm = format!(
        "{}: not a WebAssembly module: it does not start with the wasm magic number",
        p(&pod)
    );
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["inspect", p(&pod)], not_wasm.clone()),
        (
            vec![
                "scaffold",
                "manifest",
                "-t",
                "ClusterAdmissionPolicy",
                p(&pod),
            ],
            not_wasm.clone(),
        ),
        (
            vec![
                "push",
                p(&pod),
                "registry://127.0.0.1:1/x:1",
                "--plain-http",
            ],
            not_wasm.clone(),
        ),
        (
            vec!["serve", "-c", p(&config), "--insecure-plain-http"],
            format!("policy \"p\": {not_wasm}"),
        ),
        (
            vec!["explain", p(&malformed)],
            format!(
                "{}: malformed object: spec.containers[0].name",
                p(&malformed)
            ),
        ),
        (
            vec![
                "run",
                "-p",
                p(&null),
                "-r",
                p(&pod),
                "--settings-json",
                "[1]",
            ],
            "--settings-json: settings must be an object".to_string(),
        ),
    ];
    for (args, expected) in cases {
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&expected), "{args:?}: {err}");
    }
}

/// A value a command cannot use is refused, naming it, instead of being taken in silence;
/// `-o` is an output format in every command (paths are `--output-path`).
#[test]
fn bad_values_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = dir.path().join("metadata.yml");
    std::fs::write(
        &metadata,
        std::fs::read_to_string(root().join("policies/sidecar-lifecycle-policy/metadata.yml"))
            .unwrap()
            .replace("policyType: kubernetes", "policyType: kubernets"),
    )
    .unwrap();
    let lifecycle = module("wasm/sidecar-lifecycle-policy.wasm");
    let null = null_policy();
    let pod = fixture("pod.yaml");
    let out = dir.path().join("out.wasm");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "bench",
                "-p",
                p(&null),
                "-r",
                p(&pod),
                "--settings-dir",
                "nope",
            ],
            "--settings-dir nope: no such directory",
        ),
        (
            vec![
                "scaffold",
                "artifacthub",
                "-m",
                p(&metadata),
                "--created-at",
                "yesterday",
            ],
            "\"yesterday\" is not an RFC 3339 time",
        ),
        (
            vec![
                "scaffold",
                "manifest",
                "-t",
                "ClusterAdmissionPolicy",
                p(&lifecycle),
                "--name",
                "Bad Name!",
            ],
            "\"Bad Name!\" is not a Kubernetes name",
        ),
        (
            vec!["scaffold", "manifest", "-t", "Policy", p(&lifecycle)],
            "invalid value 'Policy' for '--type <KIND>'",
        ),
        (
            vec![
                "annotate",
                "-m",
                p(&metadata),
                "--output-path",
                p(&out),
                p(&null),
            ],
            "unknown policyType \"kubernets\" (expected kubernetes or raw)",
        ),
        (
            vec!["pull", "registry://127.0.0.1:1/x:1", "-o", p(&out)],
            "unexpected argument '-o'",
        ),
    ];
    for (args, expected) in cases {
        let out = run(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
