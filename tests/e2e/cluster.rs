//! A Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager
//! as `make controlplane` built them at a pinned release, with certificates, service-account
//! keys and an admin client certificate made for the run, and a kube-rs client. Each
//! component logs to `build/e2e/<version>/<component>.log`, kept after the run.

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The release the tests run against: `K8S_VERSION` (as `make e2e K8S_VERSION=1.34`), 1.37
/// when unset.
pub fn version() -> String {
    std::env::var("K8S_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "1.37".into())
}

pub fn minor(version: &str) -> u32 {
    version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// Where `make controlplane` puts the binaries, when all three are there.
pub fn binaries(root: &Path, version: &str) -> Option<PathBuf> {
    let dir = root.join("build/controlplane").join(version);
    ["etcd", "kube-apiserver", "kube-controller-manager"]
        .iter()
        .all(|b| dir.join(b).is_file())
        .then_some(dir)
}

/// A certificate authority made for the run: it signs the API server's serving
/// certificate, the admin's client certificate and the webhook's serving certificate.
pub struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new() -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "sidecars e2e ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate and its key (PEM) for `names` (DNS names or IP addresses), with the
    /// common name and organisations a Kubernetes client certificate carries.
    pub fn sign(
        &self,
        names: &[&str],
        common_name: &str,
        organisations: &[&str],
    ) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for organisation in organisations {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *organisation);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// Starts `command` so that it dies with the test process (PR_SET_PDEATHSIG), even when a
/// test panics or the run is killed. The signal follows the thread that forked the child,
/// so every child is forked by one thread that lives as long as the process.
pub fn spawn_owned(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("control-plane-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    use std::os::unix::process::CommandExt;
                    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
                    unsafe {
                        command.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .unwrap();
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    spawner.lock().unwrap().send((command, tx)).unwrap();
    rx.recv().unwrap()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process of the control plane, its output in a log file.
pub struct Component {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

impl Component {
    fn start(name: &'static str, binary: &Path, args: &[String], dir: &Path) -> Component {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = spawn_owned(command)
            .unwrap_or_else(|e| panic!("{} does not start: {e}", binary.display()));
        Component { name, log, child }
    }

    /// Fails with the end of the component's log if it has exited.
    fn check_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 30)
            );
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// An error the API server answered with: its HTTP code, reason and message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

pub struct ControlPlane {
    pub version: String,
    /// `build/e2e/<version>`: certificates, kubeconfig and the components' logs.
    pub dir: PathBuf,
    pub ca: Ca,
    client: kube::Client,
    runtime: tokio::runtime::Runtime,
    components: Mutex<Vec<Component>>,
}

impl ControlPlane {
    /// Starts etcd, the API server and the controller manager from `binaries`, and waits
    /// until the API server is ready and the controllers have made the `default`
    /// ServiceAccount (pods cannot be created before it exists).
    pub fn start(root: &Path, binaries: &Path, version: &str) -> ControlPlane {
        let dir = root.join("build/e2e").join(version);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };

        let ca = Ca::new();
        let ca_file = write("ca.crt", &ca.pem);
        let (cert, key) = ca.sign(
            &[
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
            ],
            "kube-apiserver",
            &[],
        );
        let (serving_cert, serving_key) =
            (write("apiserver.crt", &cert), write("apiserver.key", &key));
        let (cert, key) = ca.sign(&[], "sidecars-e2e-admin", &["system:masters"]);
        let (admin_cert, admin_key) = (cert, key);
        // One key pair signs (private half) and checks (public half) service-account tokens.
        let sa = rcgen::KeyPair::generate().unwrap();
        let sa_key = write("service-account.key", &sa.serialize_pem());
        let sa_pub = write("service-account.pub", &sa.public_key_pem());

        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&server, &ca.pem, &admin_cert, &admin_key),
        )
        .unwrap();

        let mut components = Vec::new();
        let etcd_data = dir.join("etcd-data");
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        components.push(Component::start(
            "etcd",
            &binaries.join("etcd"),
            &args(&[
                "--name=e2e",
                &format!("--data-dir={}", etcd_data.display()),
                &format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
                &format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
                &format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
                &format!("--initial-cluster=e2e=http://127.0.0.1:{peer_port}"),
                // A test cluster: losing it on a crash costs nothing, fsync costs seconds.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]),
            &dir,
        ));

        let minor = minor(version);
        let mut api_args = args(&[
            &format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            &format!("--secure-port={api_port}"),
            &format!("--tls-cert-file={serving_cert}"),
            &format!("--tls-private-key-file={serving_key}"),
            &format!("--client-ca-file={ca_file}"),
            &format!("--service-account-key-file={sa_pub}"),
            &format!("--service-account-signing-key-file={sa_key}"),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            // The kubernetes Service's endpoint may not be loopback, and nothing here uses it.
            "--endpoint-reconciler-type=none",
            // On by default; named so that the run says which admission it relies on.
            "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,Priority,DefaultTolerationSeconds,MutatingAdmissionPolicy,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,ResourceQuota",
        ]);
        // MutatingAdmissionPolicy is beta and off by default before 1.36.
        if minor < 36 {
            api_args.push("--feature-gates=MutatingAdmissionPolicy=true".into());
            api_args.push("--runtime-config=admissionregistration.k8s.io/v1beta1=true".into());
        }
        components.push(Component::start(
            "kube-apiserver",
            &binaries.join("kube-apiserver"),
            &api_args,
            &dir,
        ));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let config = kube::Config::from_custom_kubeconfig(
                Kubeconfig::read_from(&kubeconfig).unwrap(),
                &KubeConfigOptions::default(),
            )
            .await
            .unwrap();
            kube::Client::try_from(config).unwrap()
        });
        let plane = ControlPlane {
            version: version.to_string(),
            dir: dir.clone(),
            ca,
            client,
            runtime,
            components: Mutex::new(components),
        };
        plane.wait(
            "the API server to be ready",
            Duration::from_secs(90),
            || plane.raw("GET", "/readyz", None).is_ok(),
        );

        let cm = Component::start(
            "kube-controller-manager",
            &binaries.join("kube-controller-manager"),
            &args(&[
                &format!("--kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false",
                "--use-service-account-credentials=false",
                &format!("--root-ca-file={ca_file}"),
                &format!("--service-account-private-key-file={sa_key}"),
                // No serving endpoint: nothing here scrapes it.
                "--secure-port=0",
                "--concurrent-deployment-syncs=5",
                "--concurrent-replicaset-syncs=5",
            ]),
            &dir,
        );
        plane.components.lock().unwrap().push(cm);
        plane.wait(
            "the controllers to make the default ServiceAccount",
            Duration::from_secs(90),
            || {
                plane
                    .get("/api/v1/namespaces/default/serviceaccounts/default")
                    .is_ok()
            },
        );
        plane
    }

    /// Polls `ready` until it holds, failing with the components' logs when one exits or
    /// time runs out.
    pub fn wait(&self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let start = Instant::now();
        loop {
            if ready() {
                return;
            }
            for component in self.components.lock().unwrap().iter_mut() {
                component.check_running();
            }
            if start.elapsed() > timeout {
                let logs: Vec<String> = self
                    .components
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        format!(
                            "--- {} ({}):\n{}",
                            c.name,
                            c.log.display(),
                            tail(&c.log, 15)
                        )
                    })
                    .collect();
                panic!("timed out waiting for {what}\n{}", logs.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// One request to the API server; its JSON answer, or the error it gave.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<Value, ApiError> {
        let mut request = http::Request::builder().method(method).uri(path);
        let bytes = match body {
            Some((content_type, body)) => {
                request = request.header("Content-Type", content_type);
                serde_json::to_vec(body).unwrap()
            }
            None => Vec::new(),
        };
        let request = request.body(bytes).unwrap();
        let text = self
            .block_on(self.client.request_text(request))
            .map_err(|e| match e {
                kube::Error::Api(status) => ApiError {
                    code: status.code,
                    reason: status.reason.clone(),
                    message: status.message.clone(),
                },
                other => ApiError {
                    code: 0,
                    reason: "ClientError".into(),
                    message: other.to_string(),
                },
            })?;
        if text.trim_start().starts_with(['{', '[']) {
            serde_json::from_str(&text).map_err(|e| ApiError {
                code: 0,
                reason: "NotJSON".into(),
                message: e.to_string(),
            })
        } else {
            Ok(Value::String(text))
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.raw("GET", path, None)
    }

    /// Creates `object` (any kind) in `namespace` (ignored for cluster-scoped kinds);
    /// `dry_run` asks the API server to admit and default it without storing it.
    pub fn create(
        &self,
        namespace: Option<&str>,
        object: &Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let mut path = collection_path(object, namespace);
        if dry_run {
            path.push_str("?dryRun=All");
        }
        self.raw("POST", &path, Some(("application/json", object)))
    }

    pub fn replace(&self, object: &Value) -> Result<Value, ApiError> {
        self.raw(
            "PUT",
            &object_path(object),
            Some(("application/json", object)),
        )
    }

    /// A JSON merge patch of the object at `path`.
    pub fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, ApiError> {
        self.raw("PATCH", path, Some(("application/merge-patch+json", patch)))
    }

    pub fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.raw("DELETE", path, None)
    }

    /// A namespace with `labels`, and its `default` ServiceAccount made by the controllers.
    pub fn namespace(&self, name: &str, labels: Value) {
        let object = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}});
        match self.create(None, &object, false) {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
        self.wait(
            &format!("the default ServiceAccount of {name}"),
            Duration::from_secs(60),
            || {
                self.get(&format!(
                    "/api/v1/namespaces/{name}/serviceaccounts/default"
                ))
                .is_ok()
            },
        );
    }
}

/// The API path of `object`'s collection: `/api/v1/namespaces/ns/pods`,
/// `/apis/apps/v1/namespaces/ns/deployments`, `/apis/admissionregistration.k8s.io/v1/...`.
pub fn collection_path(object: &Value, namespace: Option<&str>) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let kind = object["kind"].as_str().unwrap_or_default();
    let prefix = if api_version.contains('/') {
        format!("/apis/{api_version}")
    } else {
        format!("/api/{api_version}")
    };
    let resource = sidecarctl::admission::plural(kind);
    match namespace.filter(|_| !CLUSTER_SCOPED.contains(&kind)) {
        Some(ns) => format!("{prefix}/namespaces/{ns}/{resource}"),
        None => format!("{prefix}/{resource}"),
    }
}

pub fn object_path(object: &Value) -> String {
    let namespace = object["metadata"]["namespace"].as_str();
    format!(
        "{}/{}",
        collection_path(object, namespace),
        object["metadata"]["name"].as_str().unwrap_or_default()
    )
}

const CLUSTER_SCOPED: [&str; 8] = [
    "Namespace",
    "RuntimeClass",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "CustomResourceDefinition",
    "ClusterAdmissionPolicy",
    "ClusterRole",
    "ClusterRoleBinding",
];

fn kubeconfig_yaml(server: &str, ca: &str, cert: &str, key: &str) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: admin}}\ncurrent-context: e2e\n",
        b64(ca),
        b64(cert),
        b64(key)
    )
}
