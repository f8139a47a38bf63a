//! What stops serve from starting: settings a policy refuses, modules policy-server would refuse.

use super::*;

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
        "--output-path",
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
