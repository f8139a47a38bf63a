//! Distribution through a real OCI registry (Debian's docker-registry on loopback):
//! annotate, inspect, push, pull, run from the registry, scaffold, Artifact Hub packages.

mod common;

use common::*;
use serde_json::Value;

const POLICIES: [&str; 4] = [
    "sidecar-injector-policy",
    "sidecar-lifecycle-policy",
    "sidecar-ordering-policy",
    "sidecar-resources-policy",
];

#[test]
fn every_policy_round_trips_through_a_registry() {
    let registry = Registry::start();
    let scratch = tempfile::tempdir().unwrap();
    for policy in POLICIES {
        let module = module(&format!("wasm/{policy}.wasm"));
        let image = format!("registry://{}/sidecars/{policy}:v0.1.0", registry.host);
        let push = run(&["push", p(&module), &image, "--plain-http"]);
        assert!(push.status.success(), "{policy}: {}", stderr(&push));
        let pulled = scratch.path().join(format!("{policy}.wasm"));
        let pull = run(&["pull", &image, "--output-path", p(&pulled), "--plain-http"]);
        assert!(pull.status.success(), "{policy}: {}", stderr(&pull));
        assert_eq!(
            std::fs::read(&pulled).unwrap(),
            std::fs::read(&module).unwrap(),
            "{policy}: bytes differ"
        );

        // The pulled module, and the module straight from the registry, answer as the local one.
        let pod = root().join("examples/pods/native-sidecar-dag.yaml");
        let local = run(&["run", "-p", p(&module), "-r", p(&pod)]);
        let from_file = run(&[
            "run",
            "-p",
            &format!("file://{}", p(&pulled)),
            "-r",
            p(&pod),
        ]);
        let from_registry = run(&["run", "-p", &image, "-r", p(&pod), "--plain-http"]);
        assert!(local.status.success(), "{}", stderr(&local));
        assert_eq!(local.stdout, from_file.stdout, "{policy}");
        assert_eq!(
            local.stdout,
            from_registry.stdout,
            "{policy}: {}",
            stderr(&from_registry)
        );

        // The manifest: one wasm layer, the wasm config, one-line annotations and the source.
        let response = registry
            .get_with(
                &format!("/v2/sidecars/{policy}/manifests/v0.1.0"),
                "Accept: application/vnd.oci.image.manifest.v1+json\r\n",
            )
            .unwrap();
        let body = &response[response.find("\r\n\r\n").unwrap() + 4..];
        let manifest: Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.wasm.config.v1+json"
        );
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(
            layers[0]["mediaType"],
            "application/vnd.wasm.content.layer.v1+wasm"
        );
        let annotations = manifest["annotations"].as_object().unwrap();
        assert_eq!(annotations["io.kubewarden.policy.title"], policy);
        assert!(
            annotations["org.opencontainers.image.source"]
                .as_str()
                .unwrap()
                .ends_with(policy)
        );
        assert!(
            !annotations.contains_key("io.kubewarden.policy.usage"),
            "multi-line annotations stay off the manifest"
        );
        assert!(
            annotations
                .values()
                .all(|v| !v.as_str().unwrap().contains('\n'))
        );
    }
}

#[test]
fn unannotated_modules_need_force_and_digests_are_verified() {
    let registry = Registry::start();
    let scratch = tempfile::tempdir().unwrap();
    let raw = module("test-policies/null-policy.wasm");
    let image = format!("registry://{}/test/null:1", registry.host);
    let refused = run(&["push", p(&raw), &image, "--plain-http"]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("carries no Kubewarden metadata"),
        "{}",
        stderr(&refused)
    );
    let forced = run(&["push", p(&raw), &image, "--plain-http", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));

    // HTTPS is the default: a plain-HTTP registry does not answer it.
    let tls = run(&[
        "pull",
        &image,
        "--output-path",
        p(&scratch.path().join("x.wasm")),
    ]);
    assert_eq!(tls.status.code(), Some(2));

    // Tamper with the stored blob: the pull must notice.
    let blobs = registry
        .storage
        .path()
        .join("data/docker/registry/v2/blobs/sha256");
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(std::fs::read(&raw).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let blob = blobs.join(&digest[..2]).join(&digest).join("data");
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let pulled = scratch.path().join("tampered.wasm");
    let out = run(&["pull", &image, "--output-path", p(&pulled), "--plain-http"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).to_lowercase().contains("digest"),
        "{}",
        stderr(&out)
    );
    assert!(!pulled.exists());
}

#[test]
fn annotate_embeds_metadata_and_inspect_reads_it() {
    let scratch = tempfile::tempdir().unwrap();
    let raw = root().join("build/raw/sidecar-ordering-policy.wasm");
    assert!(raw.is_file(), "run make wasm first");
    let inspect = run(&["inspect", p(&raw)]);
    assert_eq!(inspect.status.code(), Some(1));
    assert!(stderr(&inspect).contains("carries no Kubewarden metadata"));

    let annotated = module("wasm/sidecar-ordering-policy.wasm");
    let out = run(&["inspect", p(&annotated)]);
    assert!(out.status.success());
    let metadata: Value = serde_yaml_ng::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        metadata["protocolVersion"], "v1",
        "detected by calling protocol_version"
    );
    assert_eq!(metadata["executionMode"], "kubewarden-wapc");
    assert_eq!(metadata["mutating"], true);
    let readme =
        std::fs::read_to_string(root().join("policies/sidecar-ordering-policy/README.md")).unwrap();
    assert_eq!(
        metadata["annotations"]["io.kubewarden.policy.usage"],
        readme.as_str()
    );

    // Bad metadata is refused with the reason.
    let bad = scratch.path().join("metadata.yml");
    let text =
        std::fs::read_to_string(root().join("policies/sidecar-ordering-policy/metadata.yml"))
            .unwrap();
    std::fs::write(
        &bad,
        text.replace(
            "io.kubewarden.policy.version: 0.1.0",
            "io.kubewarden.policy.version: latest",
        ),
    )
    .unwrap();
    let refused = run(&[
        "annotate",
        "-m",
        p(&bad),
        "--output-path",
        p(&scratch.path().join("x.wasm")),
        p(&raw),
    ]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("not a semantic version"),
        "{}",
        stderr(&refused)
    );
    std::fs::write(
        &bad,
        text.replace("executionMode: kubewarden-wapc", "executionMode: wapc"),
    )
    .unwrap();
    let refused = run(&[
        "annotate",
        "-m",
        p(&bad),
        "--output-path",
        p(&scratch.path().join("x.wasm")),
        p(&raw),
    ]);
    assert!(
        stderr(&refused).contains("unknown executionMode"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn artifacthub_packages_match_their_metadata() {
    for policy in POLICIES {
        let committed = std::fs::read_to_string(
            root().join(format!("artifacthub/{policy}/artifacthub-pkg.yml")),
        )
        .unwrap_or_else(|_| {
            panic!("artifacthub/{policy}/artifacthub-pkg.yml is missing: run make artifacthub")
        });
        let created_at = committed
            .lines()
            .find_map(|l| l.strip_prefix("createdAt: "))
            .expect("createdAt")
            .trim_matches('\'')
            .to_string();
        let out = run(&[
            "scaffold",
            "artifacthub",
            "-m",
            &format!("policies/{policy}/metadata.yml"),
            "-q",
            &format!("policies/{policy}/questions-ui.yml"),
            "--created-at",
            &created_at,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            stdout(&out),
            committed,
            "{policy}: the package drifted from its metadata: run make artifacthub"
        );
    }
    assert!(root().join("artifacthub/artifacthub-repo.yml").is_file());
}

#[test]
fn example_policies_are_what_scaffold_generates() {
    for policy in ["injector", "lifecycle", "ordering", "resources"] {
        let crate_name = format!("sidecar-{policy}-policy");
        let committed = std::fs::read_to_string(
            root().join(format!("examples/policies/sidecar-{policy}.yaml")),
        )
        .unwrap();
        let command = committed
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# Generated by: sidecarctl ")
            .unwrap()
            .to_string();
        let args: Vec<&str> = command.split_whitespace().collect();
        let mut full: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        full.extend(["--name".to_string(), format!("sidecar-{policy}")]);
        let out = sidecarctl()
            .current_dir(root())
            .args(&full)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let body: String = committed
            .lines()
            .skip(1)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(stdout(&out), body, "{crate_name}: run make examples");
        let resource: Value = serde_yaml_ng::from_str(&body).unwrap();
        assert_eq!(resource["apiVersion"], "policies.kubewarden.io/v1");
        assert_eq!(resource["kind"], "ClusterAdmissionPolicy");
        assert!(
            resource["spec"]["rules"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        );
    }
    let out = run(&[
        "scaffold",
        "manifest",
        "--type",
        "AdmissionPolicy",
        p(&module("wasm/sidecar-ordering-policy.wasm")),
    ]);
    let resource: Value = serde_yaml_ng::from_str(&stdout(&out)).unwrap();
    assert_eq!(resource["metadata"]["namespace"], "default");
    assert!(
        resource["spec"]["module"]
            .as_str()
            .unwrap()
            .starts_with("file:///")
    );
    let bad = run(&[
        "scaffold",
        "manifest",
        "--type",
        "Policy",
        p(&module("wasm/sidecar-ordering-policy.wasm")),
    ]);
    assert_eq!(bad.status.code(), Some(2));
}

/// Writes an executable docker credential helper, `docker-credential-<name>`, that
/// answers `get` for every server with `user` and `password` (or fails, with no user).
fn helper(dir: &std::path::Path, name: &str, login: Option<(&str, &str)>) {
    use std::os::unix::fs::PermissionsExt;
    let body = match login {
        Some((user, password)) => format!(
            "read server\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}' \"$server\"\n"
        ),
        None => "echo 'credentials not found in native keychain' >&2\nexit 1\n".to_string(),
    };
    let file = dir.join(format!("docker-credential-{name}"));
    std::fs::write(&file, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Pushes and pulls to a registry that wants a login, with the credentials docker's
/// config.json gives: `credHelpers`, `credsStore`, `auths`. Without them, or with a
/// helper that fails, the push fails and says why; it never goes anonymous in silence.
#[test]
fn registry_logins_come_from_docker_config() {
    use base64::Engine as _;
    let (registry, _auth) = Registry::with_login("alice", "s3cret");
    let module = module("wasm/sidecar-lifecycle-policy.wasm");
    let image = format!("registry://{}/private/lifecycle:v1", registry.host);
    let bin = tempfile::tempdir().unwrap();
    helper(bin.path(), "sidecars-test", Some(("alice", "s3cret")));
    helper(bin.path(), "sidecars-wrong", Some(("alice", "guess")));
    helper(bin.path(), "sidecars-locked", None);
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let push_with = |config: Option<String>| {
        let home = tempfile::tempdir().unwrap();
        if let Some(config) = config {
            std::fs::write(home.path().join("config.json"), config).unwrap();
        }
        sidecarctl()
            .args(["push", p(&module), &image, "--plain-http"])
            .env("DOCKER_CONFIG", home.path())
            .env("PATH", &path)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let host = &registry.host;

    let anonymous = push_with(None);
    assert_eq!(anonymous.status.code(), Some(2), "{}", stderr(&anonymous));
    assert!(
        stderr(&anonymous).contains("cannot push"),
        "{}",
        stderr(&anonymous)
    );

    let wrong = push_with(Some(format!(
        r#"{{"credHelpers": {{"{host}": "sidecars-wrong"}}}}"#
    )));
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));

    let locked = push_with(Some(format!(
        r#"{{"credHelpers": {{"{host}": "sidecars-locked"}}}}"#
    )));
    assert_eq!(locked.status.code(), Some(2));
    assert!(
        stderr(&locked).contains(host.as_str()) && stderr(&locked).contains("credentials"),
        "{}",
        stderr(&locked)
    );

    let by_helper = push_with(Some(format!(
        r#"{{"credHelpers": {{"{host}": "sidecars-test"}}}}"#
    )));
    assert!(by_helper.status.success(), "{}", stderr(&by_helper));
    let by_store = push_with(Some(r#"{"credsStore": "sidecars-test"}"#.to_string()));
    assert!(by_store.status.success(), "{}", stderr(&by_store));
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let by_auths = push_with(Some(format!(
        r#"{{"auths": {{"http://{host}": {{"auth": "{auth}"}}}}}}"#
    )));
    assert!(by_auths.status.success(), "{}", stderr(&by_auths));
}

/// `run` from a registry keeps what it pulled: once the registry is gone, the kept copy
/// answers, and stderr says it is the kept copy. Two references that differ only in
/// punctuation keep two files.
#[test]
fn pulled_modules_serve_offline_and_never_collide() {
    let registry = Registry::start();
    let cache = tempfile::tempdir().unwrap();
    let lifecycle = module("wasm/sidecar-lifecycle-policy.wasm");
    let ordering = module("wasm/sidecar-ordering-policy.wasm");
    // `a/b:c` and `a/b_c:latest` once wrote the same file.
    let first = format!("registry://{}/kept/policy:v1", registry.host);
    let second = format!("registry://{}/kept/policy_v1:latest", registry.host);
    for (m, image) in [(&lifecycle, &first), (&ordering, &second)] {
        let push = run(&["push", p(m), image, "--plain-http"]);
        assert!(push.status.success(), "{}", stderr(&push));
    }
    let pod = root().join("examples/pods/istio-legacy-job.yaml");
    let run_from = |image: &str| {
        sidecarctl()
            .args(["run", "-p", image, "-r", p(&pod), "--plain-http"])
            .env("SIDECARCTL_CACHE_DIR", cache.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let local = |m: &std::path::Path| run(&["run", "-p", p(m), "-r", p(&pod)]).stdout;
    let online = [run_from(&first), run_from(&second)];
    for o in &online {
        assert!(o.status.success(), "{}", stderr(o));
    }
    assert_eq!(online[0].stdout, local(&lifecycle));
    assert_eq!(online[1].stdout, local(&ordering));
    drop(registry);
    for (image, m) in [(&first, &lifecycle), (&second, &ordering)] {
        let offline = run_from(image);
        assert!(offline.status.success(), "{}", stderr(&offline));
        assert!(
            stderr(&offline).contains("using the copy pulled before"),
            "{}",
            stderr(&offline)
        );
        assert_eq!(offline.stdout, local(m), "{image}");
    }
    // Never pulled: no copy, the pull's own error.
    let never = run_from("registry://127.0.0.1:9/kept/never:v1");
    assert_eq!(never.status.code(), Some(2));
    assert!(stderr(&never).contains("cannot pull"), "{}", stderr(&never));
}

/// A registry that accepts the connection and never answers fails the pull within
/// `--registry-timeout` (and a copy pulled before is used); a refused connection, a name
/// that does not resolve and a TLS handshake with a plain-HTTP registry are each named.
#[test]
fn registry_failures_are_named_and_never_hang() {
    let registry = Registry::start();
    let host = registry.host.clone();
    let cache = tempfile::tempdir().unwrap();
    let lifecycle = module("wasm/sidecar-lifecycle-policy.wasm");
    let image = format!("registry://{host}/silent/policy:v1");
    let push = run(&["push", p(&lifecycle), &image, "--plain-http"]);
    assert!(push.status.success(), "{}", stderr(&push));
    let pod = root().join("examples/pods/istio-legacy-job.yaml");
    let run_from = |image: &str, extra: &[&str]| {
        let started = std::time::Instant::now();
        let out = sidecarctl()
            .args(["run", "-p", image, "-r", p(&pod)])
            .args(extra)
            .env("SIDECARCTL_CACHE_DIR", cache.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        (out, started.elapsed())
    };
    // HTTPS to a registry that speaks plain HTTP.
    let (tls, _) = run_from(&image, &[]);
    assert_eq!(tls.status.code(), Some(2));
    assert!(
        stderr(&tls).contains(&format!("{host}: TLS failed"))
            && stderr(&tls).contains("needs --plain-http"),
        "{}",
        stderr(&tls)
    );
    let (online, _) = run_from(&image, &["--plain-http"]);
    assert!(online.status.success(), "{}", stderr(&online));
    // The registry goes silent on the same address: it accepts and never answers.
    drop(registry);
    let silent = std::net::TcpListener::bind(&host).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in silent.incoming() {
            held.push(connection);
        }
    });
    let (kept, took) = run_from(&image, &["--plain-http", "--registry-timeout", "1"]);
    assert!(kept.status.success(), "{}", stderr(&kept));
    assert!(
        stderr(&kept).contains(&format!("{host}: no answer within 1s (--registry-timeout)"))
            && stderr(&kept).contains("using the copy pulled before"),
        "{}",
        stderr(&kept)
    );
    assert_eq!(kept.stdout, online.stdout);
    // Not a speed assertion: only that the timeout, not a hang, ended it.
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    let out = cache.path().join("pulled.wasm");
    let pull = run(&[
        "pull",
        &format!("registry://{host}/silent/never:v1"),
        "--output-path",
        p(&out),
        "--plain-http",
        "--registry-timeout",
        "1",
    ]);
    assert_eq!(pull.status.code(), Some(2));
    assert!(
        stderr(&pull).contains("no answer within 1s"),
        "{}",
        stderr(&pull)
    );
    // Nothing listens on a port just given up.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused = run(&[
        "pull",
        &format!("registry://{closed}/x/y:1"),
        "--output-path",
        p(&out),
        "--plain-http",
    ]);
    assert!(
        stderr(&refused).contains(&format!("{closed}: the connection was refused")),
        "{}",
        stderr(&refused)
    );
    let unresolved = run(&[
        "pull",
        "registry://no-such-registry.invalid/x/y:1",
        "--output-path",
        p(&out),
    ]);
    assert!(
        stderr(&unresolved).contains("no-such-registry.invalid: the name does not resolve"),
        "{}",
        stderr(&unresolved)
    );
}
