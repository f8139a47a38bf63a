//! `sidecarctl serve` as the API server meets it: AdmissionReviews posted over real HTTPS
//! (a CA and a server certificate made per test, as a webhook's caBundle), answered by the
//! compiled policies.

#[path = "../common/mod.rs"]
mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

mod answers;
mod containment;
mod http;
mod observability;
mod shutdown;
mod startup;

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
