//! The playground page in a real browser: Debian's chromium driven over WebDriver
//! (chromium-driver), the page served by `sidecarctl playground` as `make playground`
//! built it. What the page says must be what `sidecarctl run` says on the same input and
//! settings, with the same compiled modules.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const POLICIES: [&str; 4] = [
    "sidecar-injector-policy",
    "sidecar-lifecycle-policy",
    "sidecar-ordering-policy",
    "sidecar-resources-policy",
];

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn page_dir() -> PathBuf {
    let dir = root().join("build/playground");
    assert!(
        dir.join("index.html").is_file(),
        "{} is missing: run `make playground` (or `make test`) first",
        dir.display()
    );
    dir
}

/// `sidecarctl playground` on a free port; its URL.
fn serve_page() -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidecarctl"))
        .args(["playground", "--addr", "127.0.0.1:0", "--dir"])
        .arg(page_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("playground: ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Killed(child), url)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free port, and a headless chromium session through it.
async fn browser(profile: &Path) -> (Killed, Client) {
    for tool in ["chromedriver", "chromium"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: install Debian's chromium and chromium-driver (make browser)"
        );
    }
    let port = free_port();
    let driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium", "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1500,2400", format!("--user-data-dir={}", profile.display())]}),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session");
    (driver, client)
}

/// The page's state as its URL fragment carries it.
fn fragment(state: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).unwrap())
}

/// The page's state: an input, an operation, each policy's settings (YAML text), every
/// policy on.
fn page_state(
    example: &str,
    input: &str,
    operation: &str,
    settings: &serde_json::Map<String, Value>,
) -> Value {
    let enabled: serde_json::Map<String, Value> = POLICIES
        .iter()
        .map(|p| (p.to_string(), json!(true)))
        .collect();
    json!({"example": example, "input": input, "operation": operation,
           "settings": settings, "enabled": enabled})
}

/// Waits for the page to finish evaluating, then reads what it rendered.
async fn results(client: &Client) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .execute("return document.body.dataset.ready || ''", vec![])
            .await
            .unwrap();
        match ready.as_str() {
            Some("true") => break,
            Some("error") => {
                let status = client.find(Locator::Id("status")).await.unwrap();
                panic!("the page failed: {}", status.text().await.unwrap());
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "the page never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = client
        .execute(
            "return document.getElementById('results').textContent",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

async fn open(client: &Client, url: &str, state: &Value) -> Value {
    client
        .goto(&format!("{url}#{}", fragment(state)))
        .await
        .unwrap();
    // A new fragment on the same page is a hashchange, not a load: wait for the new round.
    client
        .execute("document.body.dataset.ready = 'false'; window.dispatchEvent(new HashChangeEvent('hashchange'))", vec![])
        .await
        .unwrap();
    results(client).await
}

/// `sidecarctl run` of one policy on `object` with `settings` (YAML text): the response.
fn run_policy_on(policy: &str, object: &Value, settings: &str, scratch: &Path) -> Value {
    let request = scratch.join("object.json");
    std::fs::write(&request, serde_json::to_vec(object).unwrap()).unwrap();
    let settings_file = scratch.join("settings.yaml");
    std::fs::write(&settings_file, settings).unwrap();
    let out = run(&[
        "run",
        "-p",
        p(&module(&format!("wasm/{policy}.wasm"))),
        "-r",
        p(&request),
        "--settings-path",
        p(&settings_file),
    ]);
    assert!(out.status.success(), "{policy}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn patched(object: &Value, response: &Value) -> Value {
    let mut out = object.clone();
    if let Some(patch) = response["patch"].as_str() {
        let patch: json_patch::Patch =
            serde_json::from_slice(&STANDARD.decode(patch).unwrap()).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

/// The page's answer for one policy equals sidecarctl's.
fn same_answer(what: &str, page: &Value, cli: &Value, object: &Value) {
    assert_eq!(page["settingsValid"], true, "{what}: {page}");
    assert_eq!(page["allowed"], cli["allowed"], "{what}");
    let cli_message = cli["status"]["message"].clone();
    assert_eq!(page["message"], cli_message, "{what}");
    assert_eq!(page["warnings"], cli["warnings"], "{what}");
    assert_eq!(page["auditAnnotations"], cli["auditAnnotations"], "{what}");
    let page_object = if page["mutatedObject"].is_null() {
        object.clone()
    } else {
        page["mutatedObject"].clone()
    };
    assert_eq!(
        page_object,
        patched(object, cli),
        "{what}: the patched object"
    );
}

fn yaml(text: &str) -> Value {
    serde_yaml_ng::from_str(text).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn the_page_answers_as_sidecarctl_does() {
    let dir = page_dir();
    let examples: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("examples.json")).unwrap()).unwrap();
    let (_server, url) = serve_page();
    let profile = tempfile::tempdir().unwrap();
    let (_driver, client) = browser(profile.path()).await;
    let scratch = tempfile::tempdir().unwrap();
    let shots = dir.join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let settings: serde_json::Map<String, Value> = POLICIES
        .iter()
        .map(|p| (p.to_string(), examples["settings"][p].clone()))
        .collect();

    // It opens on the legacy Istio Job, every policy on.
    client.goto(&url).await.unwrap();
    let first = results(&client).await;
    assert_eq!(first["model"]["input"]["name"], "pi");
    assert_eq!(first["model"]["input"]["runsToCompletion"], true);
    let load_ms = first["loadToReadyMs"].as_f64().unwrap();

    let mut checked = 0;
    for (name, text) in examples["pods"].as_object().unwrap() {
        let text = text.as_str().unwrap();
        let object = yaml(text);
        let state = page_state(name, text, "CREATE", &settings);
        let page = open(&client, &url, &state).await;
        assert!(
            page["inputError"].is_null(),
            "{name}: {}",
            page["inputError"]
        );
        // Each policy on the input.
        for policy in POLICIES {
            let cli = run_policy_on(
                policy,
                &object,
                settings[policy].as_str().unwrap(),
                scratch.path(),
            );
            same_answer(
                &format!("{name}/{policy}"),
                &page["input"][policy],
                &cli,
                &object,
            );
        }
        // The chain: each policy on the one before's output, as sidecarctl gives it.
        let mut current = object.clone();
        for step in page["chain"].as_array().unwrap() {
            let policy = step["policy"].as_str().unwrap();
            let cli = run_policy_on(
                policy,
                &current,
                settings[policy].as_str().unwrap(),
                scratch.path(),
            );
            same_answer(&format!("{name}/chain/{policy}"), step, &cli, &current);
            if cli["allowed"] != true {
                break;
            }
            current = patched(&current, &cli);
        }
        assert!(!page["chain"].as_array().unwrap().is_empty(), "{name}");
        assert_eq!(page["final"], current, "{name}: the composed pod");
        checked += 1;
        let png = client.screenshot().await.unwrap();
        std::fs::write(shots.join(format!("{name}.png")), png).unwrap();
    }

    assert!(checked >= 10, "{checked} examples");

    // The drawn start order is explain's, with no settings edges.
    for name in [
        "istio-legacy-job.yaml",
        "native-sidecar-dag.yaml",
        "shop-checkout-pod.yaml",
    ] {
        let text = examples["pods"][name].as_str().unwrap();
        let mut plain = settings.clone();
        plain.insert("sidecar-ordering-policy".into(), json!("{}"));
        let page = open(&client, &url, &page_state(name, text, "CREATE", &plain)).await;
        let file = root().join("examples/pods").join(name);
        let out = run(&["explain", "-o", "json", p(&file)]);
        let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
        let order = explained
            .get("requiredStartOrder")
            .unwrap_or(&explained["startOrder"]);
        assert_eq!(&page["model"]["input"]["drawnOrder"], order, "{name}");
    }

    // A cycle is drawn, its containers marked.
    let cycle = std::fs::read_to_string(fixture("ordering/cycle.yaml")).unwrap();
    let page = open(&client, &url, &page_state("", &cycle, "CREATE", &settings)).await;
    let drawn = &page["model"]["input"];
    assert_eq!(drawn["cycle"].as_array().map(Vec::len), Some(4), "{drawn}");
    assert_eq!(drawn["marked"], 3, "{drawn}");

    // An UPDATE is the request sidecarctl gets for the same AdmissionRequest.
    let object = yaml(examples["pods"]["istio-legacy-job.yaml"].as_str().unwrap());
    let page = open(
        &client,
        &url,
        &page_state(
            "istio-legacy-job.yaml",
            examples["pods"]["istio-legacy-job.yaml"].as_str().unwrap(),
            "UPDATE",
            &settings,
        ),
    )
    .await;
    let request = json!({"uid": "00000000-0000-4000-8000-000000000000",
        "kind": {"group": "batch", "version": "v1", "kind": "Job"},
        "resource": {"group": "batch", "version": "v1", "resource": "jobs"},
        "requestKind": {"group": "batch", "version": "v1", "kind": "Job"},
        "requestResource": {"group": "batch", "version": "v1", "resource": "jobs"},
        "name": "pi", "namespace": "batch", "operation": "UPDATE",
        "userInfo": {"username": "sidecarctl", "groups": ["system:authenticated"]},
        "object": object, "oldObject": object, "dryRun": false,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "UpdateOptions"}});
    let file = scratch.path().join("update.json");
    std::fs::write(&file, serde_json::to_vec(&request).unwrap()).unwrap();
    for policy in POLICIES {
        let settings_file = scratch.path().join("update-settings.yaml");
        std::fs::write(&settings_file, settings[policy].as_str().unwrap()).unwrap();
        let out = run(&[
            "run",
            "-p",
            p(&module(&format!("wasm/{policy}.wasm"))),
            "-r",
            p(&file),
            "--settings-path",
            p(&settings_file),
        ]);
        let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
        same_answer(
            &format!("UPDATE/{policy}"),
            &page["input"][policy],
            &cli,
            &object,
        );
    }

    // A settings typo: the policy's own validate_settings message.
    let mut typo = settings.clone();
    typo.insert("sidecar-lifecycle-policy".into(), json!("convertt: true"));
    let text = examples["pods"]["istio-legacy-job.yaml"].as_str().unwrap();
    let page = open(&client, &url, &page_state("", text, "CREATE", &typo)).await;
    let said = &page["input"]["sidecar-lifecycle-policy"];
    assert_eq!(said["settingsValid"], false, "{said}");
    let out = run(&[
        "run",
        "-p",
        p(&module("wasm/sidecar-lifecycle-policy.wasm")),
        "-r",
        p(&root().join("examples/pods/istio-legacy-job.yaml")),
        "--settings-json",
        r#"{"convertt": true}"#,
    ]);
    let message = said["settingsMessage"].as_str().unwrap();
    assert!(message.contains("unknown field `convertt`"), "{message}");
    assert!(
        stderr(&out).contains(message),
        "{} vs {message}",
        stderr(&out)
    );
    let shown = client
        .find(Locator::Css(".settings-message"))
        .await
        .unwrap();
    assert_eq!(shown.text().await.unwrap(), message);

    // Malformed YAML: a clear error, and the page goes on working.
    let page = open(
        &client,
        &url,
        &page_state("", "kind: Pod\nspec: [", "CREATE", &settings),
    )
    .await;
    let error = page["inputError"].as_str().unwrap();
    assert!(error.starts_with("not YAML or JSON"), "{error}");
    let input = client.find(Locator::Id("input")).await.unwrap();
    input.clear().await.unwrap();
    client
        .execute("document.body.dataset.ready = 'false'", vec![])
        .await
        .unwrap();
    input.send_keys("{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": \"typed\"}, \"spec\": {\"containers\": [{\"name\": \"app\", \"image\": \"nginx\"}]}}").await.unwrap();
    let typed = results(&client).await;
    assert!(typed["inputError"].is_null(), "{typed}");
    assert_eq!(typed["model"]["input"]["name"], "typed");

    // Reloading the URL restores what was typed.
    client.refresh().await.unwrap();
    let reloaded = results(&client).await;
    assert_eq!(reloaded["model"]["input"]["name"], "typed");
    assert_eq!(reloaded["input"], typed["input"]);

    // Figures for the closing note: load to ready, and a 200-container pod from paste to
    // every verdict rendered.
    let big = std::fs::read_to_string(root().join("examples/bench/pod-200.yaml")).unwrap();
    let page = open(&client, &url, &page_state("", &big, "CREATE", &settings)).await;
    eprintln!(
        "playground: load to ready {load_ms:.0} ms; 200-container pod, all verdicts rendered in {:.0} ms",
        page["evaluateMs"].as_f64().unwrap()
    );
    client.close().await.unwrap();
}
