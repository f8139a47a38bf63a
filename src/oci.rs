//! Policies as OCI artifacts, the way Kubewarden distributes them: one wasm layer, an empty
//! config, the metadata's one-line annotations on the manifest.

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::metadata::{self, Metadata};

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

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Talk plain HTTP (a registry on loopback in tests); HTTPS otherwise.
    pub plain_http: bool,
    /// Where docker's config.json lives; `$DOCKER_CONFIG` or `~/.docker` when `None`.
    pub docker_config: Option<PathBuf>,
}

impl Access {
    fn client(&self) -> Client {
        Client::new(ClientConfig {
            protocol: if self.plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            ..Default::default()
        })
    }

    /// Credentials for `registry` from docker's config.json (`auths.<host>.auth`, base64
    /// `user:password`), anonymous when there are none.
    pub fn auth(&self, registry: &str) -> anyhow::Result<RegistryAuth> {
        let dir = self
            .docker_config
            .clone()
            .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        let Some(file) = dir.map(|d| d.join("config.json")).filter(|f| f.is_file()) else {
            return Ok(RegistryAuth::Anonymous);
        };
        let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
            .with_context(|| format!("{}: not a docker config", file.display()))?;
        let auths = config.get("auths").and_then(|a| a.as_object());
        let entry = auths.and_then(|a| {
            a.iter()
                .find(|(host, _)| {
                    let host = host
                        .trim_start_matches("https://")
                        .trim_start_matches("http://");
                    host.trim_end_matches('/') == registry
                })
                .map(|(_, v)| v)
        });
        let Some(encoded) = entry.and_then(|e| e.get("auth")).and_then(|a| a.as_str()) else {
            return Ok(RegistryAuth::Anonymous);
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .with_context(|| format!("{}: the auth of {registry} is not base64", file.display()))?;
        let text = String::from_utf8(decoded).context("credentials are not UTF-8")?;
        let (user, password) = text.split_once(':').ok_or_else(|| {
            anyhow!(
                "{}: the auth of {registry} is not user:password",
                file.display()
            )
        })?;
        Ok(RegistryAuth::Basic(user.into(), password.into()))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // reqwest's rustls needs a process-wide crypto provider; ring is the one we build.
    let _ = rustls::crypto::ring::default_provider().install_default();
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
    let response = runtime()?
        .block_on(
            access
                .client()
                .push(&reference, &[layer], config, &auth, Some(manifest)),
        )
        .map_err(|e| anyhow!("cannot push to {image}: {e}"))?;
    Ok(response.manifest_url)
}

/// Pulls a module; checks the layer's media type and that its bytes match its digest.
pub fn pull(image: &str, access: &Access) -> anyhow::Result<Vec<u8>> {
    let reference = reference(image)?;
    let auth = access.auth(reference.resolve_registry())?;
    let data = runtime()?
        .block_on(access.client().pull(&reference, &auth, vec![WASM_LAYER]))
        .map_err(|e| anyhow!("cannot pull {image}: {e}"))?;
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
    let digest = format!(
        "sha256:{}",
        crate::runtime::hex(&Sha256::digest(&layer.data))
    );
    if digest != descriptor.digest {
        bail!(
            "{image}: the layer's bytes have digest {digest}, the manifest says {}",
            descriptor.digest
        );
    }
    Ok(layer.data.to_vec())
}

/// The bytes of a module reference: read from disk, or pulled (and kept in `cache`, keyed
/// by the reference, so later runs work offline).
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
            let bytes = pull(image, access)?;
            if let Some(dir) = cache {
                let name: String = image
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let _ = std::fs::create_dir_all(dir)
                    .and_then(|_| std::fs::write(dir.join(format!("{name}.wasm")), &bytes));
            }
            Ok((format!("registry://{image}"), bytes))
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

    #[test]
    fn credentials_from_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            dir.path().join("config.json"),
            format!(r#"{{"auths": {{"https://registry.example.com": {{"auth": "{auth}"}}}}}}"#),
        )
        .unwrap();
        let access = Access {
            plain_http: false,
            docker_config: Some(dir.path().to_path_buf()),
        };
        assert!(
            matches!(access.auth("registry.example.com").unwrap(), RegistryAuth::Basic(u, p) if u == "alice" && p == "s3cret")
        );
        assert!(matches!(
            access.auth("other.example.com").unwrap(),
            RegistryAuth::Anonymous
        ));
    }
}
