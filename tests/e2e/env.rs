//! The environment every e2e test shares: one control plane, `sidecarctl serve` as the
//! webhook of the four example policies (registered as Kubewarden registers them), and the
//! same four modules in-process, to say what `sidecarctl run` gives for the same request.

use crate::cluster::{self, ControlPlane, spawn_owned};
use crate::common;
use crate::kubewarden::{ClusterAdmissionPolicy, KUBEWARDEN_NAMESPACE};
use serde_json::{Value, json};
use sidecarctl::admission::{self, AdmissionResponse};
use sidecarctl::evaluation::Evaluator;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Namespaces carrying this label are outside every e2e policy's namespaceSelector: the
/// tests default objects there as the API server would, with no policy involved.
pub const NO_POLICIES_LABEL: &str = "e2e.sidecars.dev/no-policies";
/// Where a patched object is defaulted again, as the API server defaults it after each
/// mutating webhook: no webhook, and a ServiceAccount that mounts no token (the
/// ServiceAccount admission plugin runs once, before the webhooks, and never again).
pub const DEFAULTING_NAMESPACE: &str = "e2e-defaults";

pub struct Env {
    pub plane: ControlPlane,
    /// The example policies, and the tests' own (a canary injector for one namespace).
    pub policies: Vec<ClusterAdmissionPolicy>,
    /// Kept for as long as the tests run.
    _webhook: Webhook,
    /// The policies in the order the API server calls their webhooks (by configuration
    /// name), each with the settings its ClusterAdmissionPolicy gives.
    pub chain: Vec<(String, Evaluator)>,
}

/// `sidecarctl serve` over TLS with the policies' policies.yml.
pub struct Webhook {
    pub base: String,
    pub log: PathBuf,
    child: Option<Child>,
    cert: PathBuf,
    key: PathBuf,
    port: u16,
}

impl Webhook {
    /// serve with `config`, logging to `dir/<name>.log`.
    pub fn start(name: &str, config: &Path, dir: &Path, ca: &cluster::Ca, port: u16) -> Webhook {
        let (cert, key) = ca.sign(&["127.0.0.1", "localhost"], "sidecarctl-serve", &[]);
        let (cert_file, key_file) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        let mut webhook = Webhook {
            base: String::new(),
            log: dir.join(format!("{name}.log")),
            child: None,
            cert: cert_file,
            key: key_file,
            port,
        };
        webhook.restart(config);
        webhook
    }

    /// (Re)starts the webhook on the same port with `config`: `sidecarctl serve`, or
    /// Kubewarden's policy-server when `POLICY_SERVER` names one (built outside this
    /// repository, as for `make compare-engines`).
    pub fn restart(&mut self, config: &Path) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        if let Some(policy_server) = policy_server() {
            return self.start_policy_server(&policy_server, config, log);
        }
        let mut command = Command::new(env!("CARGO_BIN_EXE_sidecarctl"));
        command
            .env(
                "SIDECARCTL_CACHE_DIR",
                common::root().join("target/sidecarctl-test-cache"),
            )
            .args(["serve", "--config", common::p(config)])
            .args(["--addr", &format!("127.0.0.1:{}", self.port)])
            .args([
                "--cert",
                common::p(&self.cert),
                "--key",
                common::p(&self.key),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = spawn_owned(command).expect("sidecarctl serve starts");
        let Some(base) = common::listening_on(&mut child) else {
            let status = child.wait().unwrap();
            panic!(
                "serve did not start ({status}):\n{}",
                cluster::tail(&self.log, 20)
            );
        };
        self.base = base;
        self.child = Some(child);
    }

    /// policy-server with the same policies.yml, certificate and port, ready when its
    /// readiness probe answers.
    fn start_policy_server(&mut self, binary: &Path, config: &Path, log: std::fs::File) {
        let ready_port = cluster::free_port();
        let dir = config.parent().unwrap().join("policy-server");
        std::fs::create_dir_all(dir.join("downloads")).unwrap();
        std::fs::create_dir_all(dir.join("sigstore")).unwrap();
        let mut command = Command::new(binary);
        command
            .args(["--policies", common::p(config), "--addr", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .args(["--readiness-probe-port", &ready_port.to_string()])
            .args(["--cert-file", common::p(&self.cert)])
            .args(["--key-file", common::p(&self.key)])
            .args(["--policies-download-dir", common::p(&dir.join("downloads"))])
            .args(["--sigstore-cache-dir", common::p(&dir.join("sigstore"))])
            .args([
                "--ignore-kubernetes-connection-failure",
                "--log-level",
                "warn",
                "--log-no-color",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut child = spawn_owned(command).expect("policy-server starts");
        let ready = format!("127.0.0.1:{ready_port}");
        let start = std::time::Instant::now();
        while !readiness(&ready) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "policy-server exited ({status}):\n{}",
                    cluster::tail(&self.log, 20)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "policy-server did not become ready:\n{}",
                cluster::tail(&self.log, 20)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.base = format!("https://127.0.0.1:{}", self.port);
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Kubewarden's policy-server, when `POLICY_SERVER` names it: the webhook the tests
/// register instead of `sidecarctl serve`.
pub fn policy_server() -> Option<PathBuf> {
    std::env::var_os("POLICY_SERVER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// The webhook's name in logs and reports.
pub fn engine() -> &'static str {
    if policy_server().is_some() {
        "policy-server"
    } else {
        "sidecarctl-serve"
    }
}

/// policy-server's readiness probe answers 200 (plain HTTP on its own port).
fn readiness(address: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let request =
        format!("GET /readiness HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.1 200")
}

static ENV: LazyLock<Option<Env>> = LazyLock::new(Env::start);

/// The shared environment, or `None` (with one line saying why) when `make controlplane`
/// has not built the control plane for this release.
pub fn env() -> Option<&'static Env> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let env = ENV.as_ref();
    if env.is_none() {
        SAID.call_once(|| eprintln!(
            "skipped: no control plane for Kubernetes {} in build/controlplane/ (make controlplane K8S_VERSION={0}, or make e2e)",
            cluster::version()
        ));
    }
    env
}

/// The example ClusterAdmissionPolicies, one per policy.
pub fn example_policies() -> Vec<ClusterAdmissionPolicy> {
    let dir = common::root().join("examples/policies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap() != "all-policies.yaml")
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| ClusterAdmissionPolicy::from_manifest(&yaml(f)))
        .collect()
}

pub fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The policy's module as `make wasm` built it, from the module the manifest names:
/// `registry://ghcr.io/sidecars-dev/policies/sidecar-lifecycle:v0.1.0` is
/// build/wasm/sidecar-lifecycle-policy.wasm.
pub fn module_of(policy: &ClusterAdmissionPolicy) -> PathBuf {
    let reference = policy.spec["module"].as_str().unwrap();
    let name = reference
        .rsplit('/')
        .next()
        .and_then(|n| n.split(':').next())
        .unwrap();
    common::module(&format!("wasm/{name}-policy.wasm"))
}

/// Namespaces labelled so get the tests' canary injector.
pub const CANARY_LABEL: &str = "e2e.sidecars.dev/canary";
pub const CANARY_IMAGE: &str = "docker.io/istio/proxyv2:1.25.0";

/// A second injector, for namespaces labelled [`CANARY_LABEL`]: a proxy whose canary
/// image goes to a quarter of the pods (`percent: 25`).
fn canary_injector(examples: &[ClusterAdmissionPolicy]) -> ClusterAdmissionPolicy {
    let mut policy = examples
        .iter()
        .find(|p| p.name == "sidecar-injector")
        .expect("examples/policies has the injector")
        .clone();
    policy.name = "sidecar-injector-canary".into();
    policy.spec["settings"] = json!({"sidecarSets": [{
        "name": "canary-mesh",
        "selector": {"matchLabels": {"app": "canary-web"}},
        "containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1",
            "canary": {"image": CANARY_IMAGE, "percent": 25}}]}]});
    policy.spec["namespaceSelector"] =
        json!({"matchExpressions": [{"key": CANARY_LABEL, "operator": "Exists"}]});
    policy
}

impl Env {
    fn start() -> Option<Env> {
        let root = common::root();
        let version = cluster::version();
        let binaries = cluster::binaries(&root, &version)?;
        let plane = ControlPlane::start(&root, &binaries, &version);

        // The policies as the examples configure them, for the release under test, and
        // outside the namespaces the tests keep for defaulting.
        let examples: Vec<ClusterAdmissionPolicy> = example_policies()
            .into_iter()
            .map(|mut p| {
                if let Some(settings) = p.spec["settings"].as_object_mut()
                    && settings.contains_key("kubernetesVersion")
                {
                    settings.insert("kubernetesVersion".into(), json!(version));
                }
                p.spec["namespaceSelector"] = json!({"matchExpressions": [
                    {"key": NO_POLICIES_LABEL, "operator": "DoesNotExist"}]});
                p
            })
            .collect();
        let mut policies = examples.clone();
        policies.push(canary_injector(&examples));
        let entries: serde_json::Map<String, Value> = policies
            .iter()
            .map(|p| (p.unique_name(), p.policies_yml_entry(&module_of(p))))
            .collect();
        let policies_yml = plane.dir.join("policies.yml");
        std::fs::write(
            &policies_yml,
            serde_json::to_string_pretty(&entries).unwrap(),
        )
        .unwrap();

        let webhook = Webhook::start(
            engine(),
            &policies_yml,
            &plane.dir,
            &plane.ca,
            cluster::free_port(),
        );
        for policy in &policies {
            let configuration = policy.webhook_configuration(&webhook.base, &plane.ca.pem);
            plane
                .create(None, &configuration, false)
                .unwrap_or_else(|e| panic!("{}: {e}", policy.name));
        }

        // The RuntimeClass tests/fixtures/resources/overhead.yaml runs in: the API server
        // admits a pod overhead only as its RuntimeClass sets it.
        plane
            .create(
                None,
                &json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
                    "metadata": {"name": "kata"}, "handler": "kata",
                    "overhead": {"podFixed": {"cpu": "250m", "memory": "160Mi"}}}),
                false,
            )
            .unwrap();
        plane.namespace(KUBEWARDEN_NAMESPACE, json!({}));
        plane.namespace(DEFAULTING_NAMESPACE, json!({NO_POLICIES_LABEL: "true"}));
        plane
            .merge_patch(
                &format!("/api/v1/namespaces/{DEFAULTING_NAMESPACE}/serviceaccounts/default"),
                &json!({"automountServiceAccountToken": false}),
            )
            .unwrap();

        let runtime = sidecarctl::runtime::Runtime::with_cache(None).unwrap();
        // The chain the tests' objects meet: the example policies (the canary injector
        // sees only its own namespace).
        let mut chain: Vec<(String, Evaluator)> = examples
            .iter()
            .filter(|p| p.mutating())
            .map(|p| {
                let bytes = std::fs::read(module_of(p)).unwrap();
                let module = runtime
                    .load_bytes(&p.name, &bytes, Duration::from_secs(2))
                    .unwrap();
                let settings = p.spec["settings"].clone();
                (p.unique_name(), Evaluator::new(module, settings).unwrap())
            })
            .collect();
        chain.sort_by(|a, b| a.0.cmp(&b.0));
        Some(Env {
            plane,
            policies,
            _webhook: webhook,
            chain,
        })
    }

    /// An example policy's module with other settings, in-process.
    pub fn evaluator(&self, name: &str, settings: Value) -> Evaluator {
        let policy = self.policies.iter().find(|p| p.name == name).unwrap();
        let runtime = sidecarctl::runtime::Runtime::with_cache(None).unwrap();
        let bytes = std::fs::read(module_of(policy)).unwrap();
        let module = runtime
            .load_bytes(name, &bytes, Duration::from_secs(2))
            .unwrap();
        Evaluator::new(module, settings).unwrap()
    }

    /// A namespace made before the policies see it, with what `create` puts there: the
    /// policies are then turned on for it (as when they are installed in a running
    /// cluster), once a webhook call shows they apply.
    pub fn namespace_with_objects_from_before(&self, name: &str, objects: &[Value]) -> Vec<Value> {
        self.plane
            .namespace(name, json!({NO_POLICIES_LABEL: "true"}));
        let stored: Vec<Value> = objects
            .iter()
            .map(|o| {
                self.plane
                    .create(Some(name), o, false)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            })
            .collect();
        self.plane
            .merge_patch(
                &format!("/api/v1/namespaces/{name}"),
                &json!({"metadata": {"labels": {NO_POLICIES_LABEL: null}}}),
            )
            .unwrap();
        // The API server reads namespace labels from its informer: wait until a legacy
        // proxy in a dry run comes back converted.
        let probe = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "probe", "namespace": name},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"},
                {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.1"}]}});
        self.plane.wait(
            &format!("the policies to see namespace {name}"),
            Duration::from_secs(30),
            || {
                self.plane
                    .create(Some(name), &probe, true)
                    .is_ok_and(|p| p["spec"]["initContainers"].is_array())
            },
        );
        stored
    }

    /// Sets every example policy's webhook to `policy` (`Never`, Kubewarden's, or
    /// `IfNeeded`) until the guard is dropped.
    pub fn reinvoke(&self, policy: &str) -> Reinvocation<'_> {
        self.set_reinvocation(policy);
        Reinvocation(self)
    }

    fn set_reinvocation(&self, policy: &str) {
        for p in self.policies.iter().filter(|p| p.mutating()) {
            let path = format!(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/{}",
                p.unique_name()
            );
            let mut configuration = self.plane.get(&path).unwrap();
            configuration["webhooks"][0]["reinvocationPolicy"] = json!(policy);
            self.plane.replace(&configuration).unwrap();
        }
        // The API server reads webhook configurations from its informer.
        std::thread::sleep(Duration::from_secs(3));
    }

    /// A namespace for the tests' objects, made once.
    pub fn namespace(&self, name: &str) {
        static MADE: LazyLock<Mutex<std::collections::BTreeSet<String>>> =
            LazyLock::new(Default::default);
        if MADE.lock().unwrap().insert(name.to_string()) {
            self.plane.namespace(name, json!({}));
        }
    }
}

/// Puts the webhooks back to Kubewarden's `Never` when dropped.
pub struct Reinvocation<'a>(&'a Env);

impl Drop for Reinvocation<'_> {
    fn drop(&mut self) {
        self.0.set_reinvocation("Never");
    }
}

/// What the policies do to an object, as `sidecarctl run` of each in the API server's
/// order gives it: refused with a message, or the object they leave.
#[derive(Debug)]
pub enum Outcome {
    Stored(Value),
    Refused { policy: String, message: String },
}

/// An AdmissionRequest for `object` in `namespace`, as the API server sends it.
pub fn request_for(object: &Value, namespace: &str, operation: &str, old: Option<&Value>) -> Value {
    let mut request = admission::wrap_object(object.clone());
    request["namespace"] = json!(namespace);
    request["operation"] = json!(operation);
    if let Some(old) = old {
        request["oldObject"] = old.clone();
    }
    request
}

impl Env {
    /// The chain of mutating policies over `object` in `namespace`, each seeing what the
    /// one before it left, defaulted again by the API server after each patch (in the
    /// defaulting namespace). `Err` when the API server refuses an object a policy wrote.
    /// The chain of mutating policies over an object the API server admitted, in
    /// `namespace`, as the API server runs it: each policy sees what the one before it
    /// left, defaulted again after each patch (the API server validates only at the
    /// end); once a policy has changed the object, the built-in mutating plugins run once
    /// more (the ServiceAccount plugin mounts the token into injected containers), then
    /// the object is validated. `Err` when the API server refuses what the policies wrote.
    pub fn run_chain(&self, admitted: &Admitted, namespace: &str) -> Result<Outcome, String> {
        let mut current = admitted.as_sent.clone();
        let mut changed = false;
        for (id, evaluator) in &self.chain {
            let request = request_for(&current, namespace, "CREATE", None);
            let response: AdmissionResponse = evaluator.evaluate(&request).response;
            if !response.allowed {
                let message = response
                    .status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_default();
                return Ok(Outcome::Refused {
                    policy: id.clone(),
                    message,
                });
            }
            if response.patch.is_some() {
                let patched = response.patched(&current).map_err(|e| e.to_string())?;
                current = match self.defaulted(&patched) {
                    Ok(defaulted) => as_sent(defaulted, &patched),
                    // Invalid as it stands: defaulting happens all the same, but the dry
                    // run that shows it also validates. Later policies may still refuse it,
                    // and see its quantities as the API server decodes them (`0.1e1` is `1`).
                    Err(e) if e.code == 422 => with_canonical_quantities(patched),
                    Err(e) => return Err(format!("defaulting what {id} wrote: {e}")),
                };
                changed = true;
            }
        }
        if !changed {
            return Ok(Outcome::Stored(admitted.as_stored.clone()));
        }
        match self.admitted_by_the_api_server(&current) {
            Ok(again) => Ok(Outcome::Stored(again.as_stored)),
            Err(e) => Err(format!(
                "the API server refuses what the policies wrote: {e}"
            )),
        }
    }

    /// `object` as the API server defaults it, through no policy and mounting no token.
    pub fn defaulted(&self, object: &Value) -> Result<Value, cluster::ApiError> {
        let mut object = object.clone();
        object["metadata"]["namespace"] = json!(DEFAULTING_NAMESPACE);
        self.plane.create(Some(DEFAULTING_NAMESPACE), &object, true)
    }

    /// `object` through the API server's own admission, as a dry run where no policy is:
    /// as the first webhook is sent it, and as it would be stored.
    pub fn admitted_by_the_api_server(
        &self,
        object: &Value,
    ) -> Result<Admitted, cluster::ApiError> {
        let mut moved = object.clone();
        moved["metadata"]["namespace"] = json!(KUBEWARDEN_NAMESPACE);
        let defaulted = self
            .plane
            .create(Some(KUBEWARDEN_NAMESPACE), &moved, true)?;
        Ok(Admitted {
            as_sent: as_sent(defaulted.clone(), object),
            as_stored: defaulted,
        })
    }
}

/// An object the API server admitted in a dry run.
#[derive(Debug)]
pub struct Admitted {
    /// As a webhook is sent it: defaulted, the built-in admission plugins' changes made
    /// (the ServiceAccount token volume among them).
    pub as_sent: Value,
    /// As the API server would store it.
    pub as_stored: Value,
}

/// `object` with every resource quantity (under `requests`, `limits`, `overhead`) written
/// as the API server writes it back after decoding it.
fn with_canonical_quantities(mut object: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    match (key.as_str(), value) {
                        ("requests" | "limits" | "overhead", Value::Object(quantities)) => {
                            for q in quantities.values_mut() {
                                let text = match q {
                                    Value::String(t) => t.clone(),
                                    Value::Number(n) => n.to_string(),
                                    _ => continue,
                                };
                                if let Ok(parsed) = sidecar_model::Quantity::parse(&text) {
                                    *q = Value::String(parsed.to_string());
                                }
                            }
                        }
                        (_, value) => walk(value),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut object);
    object
}

/// A dry run's answer as a webhook is sent it: what the API server only does once
/// admission is over (the name it generates, uid, timestamps, status, a Job's selector
/// and the labels that go with it, the fields of a gate that is off, which it drops)
/// undone, from what `sent` had.
pub fn as_sent(defaulted: Value, sent: &Value) -> Value {
    // What `sent` wrote wins, but its quantities as the API server decoded them: a webhook
    // sees `0.1e1` as `1`.
    let mut defaulted = with_canonical_quantities(overlay(defaulted, sent));
    defaulted["metadata"] = sent["metadata"].clone();
    if let Some(map) = defaulted.as_object_mut() {
        map.remove("status");
    }
    if sent["kind"] == "Job" {
        for pointer in ["/spec/selector", "/spec/template/metadata/labels"] {
            let (parent, field) = pointer.rsplit_once('/').unwrap();
            let target = defaulted.pointer_mut(parent).and_then(Value::as_object_mut);
            match (target, sent.pointer(pointer)) {
                (Some(map), Some(value)) => {
                    map.insert(field.into(), value.clone());
                }
                (Some(map), None) => {
                    map.remove(field);
                }
                (None, _) => {}
            }
        }
    }
    defaulted
}

/// `sent` over `defaulted`: every field `sent` has, with what defaulting and the built-in
/// admission plugins added around it (list entries they append after the sent ones kept).
fn overlay(defaulted: Value, sent: &Value) -> Value {
    match (defaulted, sent) {
        (Value::Object(mut base), Value::Object(top)) => {
            for (key, value) in top {
                let merged = overlay(base.remove(key).unwrap_or(Value::Null), value);
                base.insert(key.clone(), merged);
            }
            Value::Object(base)
        }
        (Value::Array(base), Value::Array(top)) if base.len() >= top.len() => {
            let mut base = base.into_iter();
            let mut out: Vec<Value> = top
                .iter()
                .map(|value| overlay(base.next().unwrap_or(Value::Null), value))
                .collect();
            out.extend(base);
            Value::Array(out)
        }
        (_, top) => top.clone(),
    }
}
