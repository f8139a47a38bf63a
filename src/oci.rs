//! Policies as OCI artifacts, the way Kubewarden distributes them: one wasm layer, an empty
//! config, the metadata's one-line annotations on the manifest.

use anyhow::{Context, anyhow, bail};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::metadata::{self, Metadata};
use crate::runtime::{Policy, Runtime};
use std::time::Duration;

pub const WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v1+json";
pub const SOURCE: &str = "org.opencontainers.image.source";

/// Where a module comes from: `registry://host/repo:tag`, `file:///path`, or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleRef {
    Registry(String),
    File(PathBuf),
}

impl ModuleRef {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if let Some(rest) = text.strip_prefix("registry://") {
            if rest.is_empty() {
                bail!("{text}: no image reference after registry://");
            }
            return Ok(ModuleRef::Registry(rest.to_string()));
        }
        if let Some(path) = text.strip_prefix("file://") {
            return Ok(ModuleRef::File(PathBuf::from(path)));
        }
        if text.contains("://") {
            bail!("{text}: unsupported module reference (use a path, file:// or registry://)");
        }
        Ok(ModuleRef::File(PathBuf::from(text)))
    }
}

/// How long a registry operation may take unless told otherwise: a registry that accepts
/// the connection and never answers fails the pull (and a copy pulled before gets its
/// chance) instead of hanging the command.
pub const DEFAULT_REGISTRY_TIMEOUT: Duration = Duration::from_secs(30);

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct Access {
    /// Talk plain HTTP (a registry on loopback in tests); HTTPS otherwise.
    pub plain_http: bool,
    /// Where docker's config.json lives; `$DOCKER_CONFIG` or `~/.docker` when `None`.
    pub docker_config: Option<PathBuf>,
    /// The most one push or pull may take, connecting included.
    pub timeout: Duration,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            plain_http: false,
            docker_config: None,
            timeout: DEFAULT_REGISTRY_TIMEOUT,
        }
    }
}

/// Why a registry could not be reached, when it could not: said in a user's words, with
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{host}: no answer within {}s (--registry-timeout)", .after.as_secs())]
    Timeout { host: String, after: Duration },
    #[error("{host}: the name does not resolve ({reason})")]
    Unresolved { host: String, reason: String },
    #[error("{host}: the connection was refused (is the registry running on that port?)")]
    Refused { host: String },
    #[error("{host}: TLS failed ({reason}); a registry that speaks plain HTTP needs --plain-http")]
    Tls { host: String, reason: String },
    #[error("{host}: {reason}")]
    Other { host: String, reason: String },
}

impl Access {
    fn client(&self) -> Client {
        // reqwest's rustls needs a process-wide crypto provider; ring is the one we build.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(ClientConfig {
            protocol: if self.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(self.timeout),
            read_timeout: Some(self.timeout),
            ..Default::default()
        })
    }

    /// Runs one registry operation on `host` within the timeout; a failure is named by its
    /// cause, read from the typed errors under oci-client's.
    fn run<T>(
        &self,
        host: &str,
        operation: impl std::future::Future<
            Output = Result<T, oci_client::errors::OciDistributionError>,
        >,
    ) -> anyhow::Result<T> {
        let host = host.to_string();
        let timeout = self.timeout;
        match runtime()?.block_on(async move { tokio::time::timeout(timeout, operation).await }) {
            Err(_) => Err(RegistryError::Timeout {
                host,
                after: self.timeout,
            }
            .into()),
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.cause(host, &e).into()),
        }
    }

    fn cause(&self, host: String, e: &oci_client::errors::OciDistributionError) -> RegistryError {
        // Every error under oci-client's: each one's source, and what an io::Error wraps
        // (its `source` skips that).
        let mut under: Vec<&(dyn std::error::Error + 'static)> = vec![e];
        while let Some(error) = under.pop() {
            if let Some(tls) = error.downcast_ref::<rustls::Error>() {
                return RegistryError::Tls {
                    host,
                    reason: tls.to_string(),
                };
            }
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => {
                        return RegistryError::Refused { host };
                    }
                    std::io::ErrorKind::TimedOut => {
                        return RegistryError::Timeout {
                            host,
                            after: self.timeout,
                        };
                    }
                    _ => {}
                }
                under.extend(
                    io.get_ref()
                        .map(|inner| inner as &(dyn std::error::Error + 'static)),
                );
            }
            under.extend(error.source());
        }
        // The resolver's failure reaches us as text only: ask the resolver ourselves.
        let port = if self.plain_http { 80 } else { 443 };
        let name = host
            .rsplit_once(':')
            .map_or(host.as_str(), |(name, _)| name);
        if let Err(resolve) = std::net::ToSocketAddrs::to_socket_addrs(&(name, port)) {
            return RegistryError::Unresolved {
                host,
                reason: resolve.to_string(),
            };
        }
        RegistryError::Other {
            host,
            reason: e.to_string(),
        }
    }

    /// Credentials for `registry` as docker finds them in its config.json: `auths`
    /// (Docker Hub's `https://index.docker.io/v1/` key included), `credHelpers` and
    /// `credsStore` (the `docker-credential-<name>` helper is run), through the
    /// `docker_credential` crate policy-server's fetcher uses. Anonymous when the config
    /// names nothing for the registry; a config or helper that fails is an error, never a
    /// silent anonymous push.
    pub fn auth(&self, registry: &str) -> anyhow::Result<RegistryAuth> {
        use docker_credential::{CredentialRetrievalError as E, DockerCredential};
        let dir = self
            .docker_config
            .clone()
            .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        let Some(file) = dir.map(|d| d.join("config.json")).filter(|f| f.is_file()) else {
            return Ok(RegistryAuth::Anonymous);
        };
        let reader = std::fs::File::open(&file)
            .map(std::io::BufReader::new)
            .with_context(|| format!("cannot read {}", file.display()))?;
        match docker_credential::get_credential_from_reader(reader, registry) {
            Ok(DockerCredential::UsernamePassword(user, password)) => {
                Ok(RegistryAuth::Basic(user, password))
            }
            Ok(DockerCredential::IdentityToken(_)) => {
                // An OAuth refresh token, which oci-client cannot exchange: said, not hidden.
                eprintln!(
                    "warning: {}: {registry} has an identity token, which sidecarctl cannot use; going anonymous",
                    file.display()
                );
                Ok(RegistryAuth::Anonymous)
            }
            Err(E::NoCredentialConfigured) => Ok(RegistryAuth::Anonymous),
            Err(e) => bail!("{}: credentials for {registry}: {e}", file.display()),
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn reference(image: &str) -> anyhow::Result<Reference> {
    image
        .parse::<Reference>()
        .map_err(|e| anyhow!("{image}: not an image reference: {e}"))
}

/// Pushes `module`; refuses one without Kubewarden metadata unless `force`. Returns the
/// manifest URL.
pub fn push(
    module: &[u8],
    image: &str,
    access: &Access,
    force: bool,
    source: Option<&str>,
) -> anyhow::Result<String> {
    let metadata: Option<Metadata> = metadata::read(module)?;
    if metadata.is_none() && !force {
        bail!(
            "the module carries no Kubewarden metadata: annotate it first (sidecarctl annotate), or push it anyway with --force"
        );
    }
    let reference = reference(image)?;
    let mut annotations: BTreeMap<String, String> = metadata
        .as_ref()
        .map(Metadata::single_line_annotations)
        .unwrap_or_default();
    let source = source
        .map(str::to_string)
        .or_else(|| annotations.get("io.kubewarden.policy.source").cloned());
    if let Some(source) = source {
        annotations.insert(SOURCE.into(), source);
    }
    let layer = ImageLayer::new(module.to_vec(), WASM_LAYER.into(), None);
    let config = Config::new(b"{}".to_vec(), WASM_CONFIG.into(), None);
    let manifest =
        OciImageManifest::build(std::slice::from_ref(&layer), &config, Some(annotations));
    let auth = access.auth(reference.resolve_registry())?;
    let client = access.client();
    let response = access
        .run(
            reference.resolve_registry(),
            client.push(&reference, &[layer], config, &auth, Some(manifest)),
        )
        .with_context(|| format!("cannot push to {image}"))?;
    Ok(response.manifest_url)
}

/// Pulls a module; checks the layer's media type and that its bytes match its digest.
pub fn pull(image: &str, access: &Access) -> anyhow::Result<Vec<u8>> {
    let reference = reference(image)?;
    let auth = access.auth(reference.resolve_registry())?;
    let client = access.client();
    let data = access
        .run(
            reference.resolve_registry(),
            client.pull(&reference, &auth, vec![WASM_LAYER]),
        )
        .with_context(|| format!("cannot pull {image}"))?;
    let manifest = data
        .manifest
        .ok_or_else(|| anyhow!("{image}: no manifest"))?;
    let [descriptor] = manifest.layers.as_slice() else {
        bail!(
            "{image}: a policy has one layer, this artifact has {}",
            manifest.layers.len()
        );
    };
    let [layer] = data.layers.as_slice() else {
        bail!("{image}: expected one wasm layer");
    };
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&layer.data)));
    if digest != descriptor.digest {
        bail!(
            "{image}: the layer's bytes have digest {digest}, the manifest says {}",
            descriptor.digest
        );
    }
    Ok(layer.data.to_vec())
}

/// Loads a policy from a path, `file://` or `registry://` reference.
pub fn load_policy(
    runtime: &Runtime,
    module: &ModuleRef,
    access: &Access,
    timeout: Duration,
) -> anyhow::Result<Policy> {
    let (name, bytes) = read_module(runtime, module, access)?;
    Ok(runtime.load_bytes(&name, &bytes, timeout)?)
}

/// A module's name and bytes, pulled ones kept in `runtime`'s cache.
pub fn read_module(
    runtime: &Runtime,
    module: &ModuleRef,
    access: &Access,
) -> anyhow::Result<(String, Vec<u8>)> {
    let pulled = runtime.cache_dir().map(|d| d.join("pulled"));
    fetch(module, access, pulled.as_deref())
}

/// The bytes of a module reference: read from disk, or pulled. A pulled module is kept
/// in `cache` under the sha256 of its reference (names that differ only in punctuation
/// never share a file); when a later pull fails, the kept copy is used and stderr says
/// so, so a run from a registry works offline once it has worked online.
pub fn fetch(
    module: &ModuleRef,
    access: &Access,
    cache: Option<&Path>,
) -> anyhow::Result<(String, Vec<u8>)> {
    match module {
        ModuleRef::File(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            Ok((path.display().to_string(), bytes))
        }
        ModuleRef::Registry(image) => {
            let name = format!("registry://{image}");
            let kept = cache.map(|dir| {
                let key = hex::encode(Sha256::digest(image.as_bytes()));
                dir.join(format!("{key}.wasm"))
            });
            match pull(image, access) {
                Ok(bytes) => {
                    if let Some(file) = &kept {
                        // A cache that cannot be written only costs the offline copy.
                        let _ = crate::files::write_atomically(file, &bytes);
                    }
                    Ok((name, bytes))
                }
                Err(e) => match kept
                    .as_ref()
                    .and_then(|f| std::fs::read(f).ok().map(|b| (f, b)))
                {
                    Some((file, bytes)) => {
                        eprintln!(
                            "warning: {e:#}; using the copy pulled before, {}",
                            file.display()
                        );
                        Ok((name, bytes))
                    }
                    None => Err(e),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_references() {
        assert_eq!(
            ModuleRef::parse("registry://ghcr.io/a/b:v1").unwrap(),
            ModuleRef::Registry("ghcr.io/a/b:v1".into())
        );
        assert_eq!(
            ModuleRef::parse("file:///tmp/p.wasm").unwrap(),
            ModuleRef::File("/tmp/p.wasm".into())
        );
        assert_eq!(
            ModuleRef::parse("build/p.wasm").unwrap(),
            ModuleRef::File("build/p.wasm".into())
        );
        assert!(ModuleRef::parse("https://x/p.wasm").is_err());
        assert!(ModuleRef::parse("registry://").is_err());
    }

    fn access(config: &str) -> (tempfile::TempDir, Access) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let access = Access {
            docker_config: Some(dir.path().to_path_buf()),
            ..Access::default()
        };
        (dir, access)
    }

    fn basic(auth: RegistryAuth) -> Option<(String, String)> {
        match auth {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn credentials_from_docker_config() {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let (_dir, access) = access(&format!(
            r#"{{"auths": {{"https://registry.example.com": {{"auth": "{auth}"}},
                           "https://index.docker.io/v1/": {{"auth": "{auth}"}}}}}}"#
        ));
        let alice = Some(("alice".to_string(), "s3cret".to_string()));
        assert_eq!(basic(access.auth("registry.example.com").unwrap()), alice);
        // Docker Hub images resolve to index.docker.io; docker login writes its v1 URL.
        let hub = reference("docker.io/library/busybox:1").unwrap();
        assert_eq!(basic(access.auth(hub.resolve_registry()).unwrap()), alice);
        assert!(matches!(
            access.auth("other.example.com").unwrap(),
            RegistryAuth::Anonymous
        ));
    }
}
