//! Helpers for the integration tests: the built modules and the sidecarctl binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A module `make wasm` built. Missing modules fail the test: it cannot pass without them.
pub fn module(relative: &str) -> PathBuf {
    let path = root().join("build").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run `make wasm` (or `make test`) first",
        path.display()
    );
    path
}

pub fn null_policy() -> PathBuf {
    module("test-policies/null-policy.wasm")
}

pub fn test_mutator() -> PathBuf {
    module("test-policies/test-mutator.wasm")
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// The shared corpus of Istio-injected workloads, when this checkout has ../shared beside it.
pub fn corpus() -> Option<PathBuf> {
    let dir = root().join("../shared/corpus/istio");
    if dir.join("index.json").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: ../shared/corpus/istio is not present in this checkout");
        None
    }
}

/// Every `*.request.json` of the corpus, read.
pub fn corpus_requests(dir: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut out: Vec<(PathBuf, serde_json::Value)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(".request.json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let value = serde_json::from_str(&text).unwrap();
            (path, value)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "{} holds no requests", dir.display());
    out
}

pub fn sidecarctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sidecarctl"));
    cmd.env(
        "SIDECARCTL_CACHE_DIR",
        root().join("target/sidecarctl-test-cache"),
    );
    cmd
}

pub fn run(args: &[&str]) -> Output {
    sidecarctl()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("sidecarctl runs")
}

/// The address `sidecarctl serve` prints on its first line of output once it listens
/// (`listening on https://…`); `None` when it exits first.
pub fn listening_on(child: &mut std::process::Child) -> Option<String> {
    use std::io::BufRead;
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take()?)
        .read_line(&mut first)
        .ok()?;
    first
        .trim()
        .strip_prefix("listening on ")
        .map(str::to_string)
}

/// `sidecarctl run -p POLICY -r REQUEST EXTRA...`
pub fn run_policy(policy: &Path, request: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["run", "-p", p(policy), "-r", p(request)];
    args.extend(extra);
    run(&args)
}

pub fn run_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = sidecarctl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sidecarctl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Debian's docker-registry, started on a free loopback port with its storage in a
/// temporary directory; stopped when dropped.
pub struct Registry {
    pub host: String,
    pub storage: tempfile::TempDir,
    child: std::process::Child,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_with("")
    }

    /// A registry that takes pushes and pulls only from `user` with `password` (htpasswd,
    /// bcrypt), as a private registry does.
    pub fn with_login(user: &str, password: &str) -> (Registry, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let hash = bcrypt::hash_with_result(password, 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoA);
        let file = dir.path().join("htpasswd");
        std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: sidecars-test\n    path: {}\n",
            file.display()
        );
        (Self::start_with(&auth), dir)
    }

    fn start_with(extra: &str) -> Registry {
        let binary = ["/usr/bin/docker-registry", "docker-registry"]
            .into_iter()
            .find(|b| Command::new(b).arg("--version").output().is_ok())
            .expect("Debian's docker-registry is not installed: `make deps` (or apt-get install docker-registry) installs it");
        let storage = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = storage.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                storage.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .args(["serve", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let host = format!("127.0.0.1:{port}");
        let registry = Registry {
            host,
            storage,
            child,
        };
        for _ in 0..100 {
            // 401 is a registry that wants a login: up all the same.
            if registry
                .get("/v2/")
                .is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.1 401"))
            {
                return registry;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("docker-registry did not answer on {}", registry.host);
    }

    /// A plain HTTP GET; the whole response, headers included.
    pub fn get(&self, path: &str) -> Option<String> {
        self.get_with(path, "")
    }

    pub fn get_with(&self, path: &str, headers: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.host).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{headers}Connection: close\r\n\r\n",
            self.host
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod spec of a Pod or a workload.
pub fn pod_spec(object: &serde_json::Value) -> &serde_json::Value {
    let spec = &object["spec"];
    let spec = spec.get("jobTemplate").map_or(spec, |j| &j["spec"]);
    spec.get("template").map_or(spec, |t| &t["spec"])
}

/// The pod metadata of a Pod or a workload.
pub fn pod_metadata(object: &serde_json::Value) -> &serde_json::Value {
    let spec = &object["spec"];
    let spec = spec.get("jobTemplate").map_or(spec, |j| &j["spec"]);
    spec.get("template")
        .map_or(&object["metadata"], |t| &t["metadata"])
}
