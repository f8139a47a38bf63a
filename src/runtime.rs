//! The wasmtime side: one engine, modules compiled once (and cached on disk), a fresh
//! waPC instance per evaluation with an epoch deadline, as policy-server runs policies.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;
use wapc::WapcHost;
use wasmtime::{Config, Engine, Module};
use wasmtime_provider::{
    EpochDeadlines, ResourceLimits, WasmtimeEngineProviderBuilder, WasmtimeEngineProviderPre,
};

/// One epoch tick. policy-server ticks once a second; a finer tick lets tests use short
/// deadlines and keeps the default (2 s) within one tick of exact.
pub const TICK: Duration = Duration::from_millis(100);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// The text wasmtime-provider gives an interrupted guest call.
const INTERRUPTED: &str = "execution deadline exceeded";

/// What one instance's linear memory may grow to unless told otherwise. The policies need
/// a few MiB for a 200-container pod and about ten times a request's size for a request
/// that is mostly one big annotation (the payload, the object's text, the answer and its
/// JSON each hold it): a 16 MiB request, five times what an API server sends, takes the
/// injector past 128 MiB (`tests/allocator.rs`). A module that allocates without end is
/// stopped here (its `memory.grow` fails, and a Rust guest aborts) instead of at wasm32's
/// 4 GiB.
pub const DEFAULT_MAX_MEMORY: usize = 256 << 20;

/// The largest answer taken from a guest is this plus twice its payload: an answer is a
/// verdict, messages and at most a mutated object, which is about the size of the object
/// it mutates (part of the payload). A module that answers more fails that request
/// instead of sending the API server what it never asked for.
pub const ANSWER_ALLOWANCE: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path} is not a WebAssembly module: {reason}")]
    NotWasm { path: String, reason: String },
    #[error("{path} is not a waPC policy: it does not export {missing}")]
    NotAPolicy { path: String, missing: &'static str },
    #[error("cannot prepare {path}: {reason}")]
    Prepare { path: String, reason: String },
    #[error("the policy did not initialise: {0}")]
    Init(String),
    #[error("the policy exceeded its {0:?} deadline")]
    Timeout(Duration),
    #[error("the policy failed in {operation}: {reason}")]
    Guest { operation: String, reason: String },
    #[error("the policy answered {bytes} bytes to a request of {payload} in {operation}, more than the {} MiB plus twice the request an answer may have", ANSWER_ALLOWANCE >> 20)]
    AnswerTooLarge {
        operation: String,
        bytes: usize,
        payload: usize,
    },
}

/// The engine every module of a process is compiled with.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
    /// Per instance, in bytes.
    max_memory: usize,
}

impl Runtime {
    /// The engine, with compiled modules cached where `SIDECARCTL_CACHE_DIR` says.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_cache(cache_dir())
    }

    /// The engine, with compiled modules cached in `cache_dir` (none: not cached).
    pub fn with_cache(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        start_ticker(&engine);
        Ok(Runtime {
            engine,
            cache_dir,
            max_memory: DEFAULT_MAX_MEMORY,
        })
    }

    /// Instances of the policies loaded from now on may grow their memory to `bytes`.
    pub fn with_max_memory(mut self, bytes: usize) -> Self {
        self.max_memory = bytes;
        self
    }

    /// Where compiled modules (and pulled ones, under `pulled/`) are kept, if anywhere.
    pub fn cache_dir(&self) -> Option<&Path> {
        self.cache_dir.as_deref()
    }

    pub fn load_bytes(
        &self,
        name: &str,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<Policy, HostError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(HostError::NotWasm {
                path: name.into(),
                reason: "it does not start with the wasm magic number".into(),
            });
        }
        let digest = hex::encode(Sha256::digest(bytes));
        let module = self.compile(name, bytes, &digest)?;
        for export in ["__guest_call", "wapc_init"] {
            if module.get_export(export).is_none() {
                return Err(HostError::NotAPolicy {
                    path: name.into(),
                    missing: if export == "__guest_call" {
                        "__guest_call"
                    } else {
                        "wapc_init"
                    },
                });
            }
        }
        let pre = WasmtimeEngineProviderBuilder::new()
            .engine(self.engine.clone())
            .module(module)
            .enable_resource_limits(ResourceLimits {
                max_memory_size: Some(self.max_memory),
                // Tables hold function references; policies never grow theirs.
                max_table_elements: Some(100_000),
            })
            .build_pre()
            .map_err(|e| HostError::Prepare {
                path: name.into(),
                reason: e.to_string(),
            })?;
        let ticks = timeout.as_millis().div_ceil(TICK.as_millis()).max(1) as u64;
        Ok(Policy {
            name: name.into(),
            pre,
            timeout,
            deadlines: EpochDeadlines {
                wapc_init: ticks,
                wapc_func: ticks,
            },
        })
    }

    fn compile(&self, name: &str, bytes: &[u8], digest: &str) -> Result<Module, HostError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{}.cwasm", self.compatibility())));
        if let Some(file) = &cached
            && file.is_file()
        {
            // SAFETY: the file is one this process family wrote with `Module::serialize`
            // for this engine configuration (the name carries its compatibility hash);
            // wasmtime checks the header and refuses a mismatch, and we fall back to
            // compiling on any error.
            if let Ok(module) = unsafe { Module::deserialize_file(&self.engine, file) } {
                return Ok(module);
            }
        }
        let module = Module::from_binary(&self.engine, bytes).map_err(|e| HostError::NotWasm {
            path: name.into(),
            reason: format!("{e:#}")
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        })?;
        if let (Some(file), Ok(serialized)) = (cached, module.serialize()) {
            // A cache that cannot be written only costs time.
            let _ = crate::files::write_atomically(&file, &serialized);
        }
        Ok(module)
    }

    fn compatibility(&self) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }
}

/// `$SIDECARCTL_CACHE_DIR`, else `$XDG_CACHE_HOME/sidecarctl`, else `~/.cache/sidecarctl`.
/// `SIDECARCTL_CACHE_DIR=off` turns the cache off.
fn cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SIDECARCTL_CACHE_DIR") {
        return (dir != "off").then(|| PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sidecarctl"))
}

fn start_ticker(engine: &Engine) {
    static TICKER: Once = Once::new();
    let engine = engine.clone();
    TICKER.call_once(move || {
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        });
    });
}

/// A compiled, pre-instantiated policy module.
#[derive(Clone)]
pub struct Policy {
    pub name: String,
    pre: WasmtimeEngineProviderPre,
    timeout: Duration,
    deadlines: EpochDeadlines,
}

impl Policy {
    /// A fresh instance: `_start` and `wapc_init` have run.
    pub fn instantiate(&self) -> Result<Instance, HostError> {
        let provider = self
            .pre
            .rehydrate(Some(self.deadlines))
            .map_err(|e| HostError::Init(e.to_string()))?;
        let host =
            WapcHost::new(Box::new(provider), Some(Box::new(host_callback))).map_err(|e| {
                let text = e.to_string();
                if text.contains("timeout") || text.contains(INTERRUPTED) {
                    HostError::Timeout(self.timeout)
                } else {
                    HostError::Init(text)
                }
            })?;
        Ok(Instance {
            host,
            timeout: self.timeout,
        })
    }

    /// One call in a fresh instance, as policy-server evaluates.
    pub fn call(&self, operation: &str, payload: &[u8]) -> Result<Vec<u8>, HostError> {
        self.instantiate()?.call(operation, payload)
    }
}

/// A live instance; kwctl-style reuse calls it again and again.
pub struct Instance {
    host: WapcHost,
    timeout: Duration,
}

impl Instance {
    pub fn call(&self, operation: &str, payload: &[u8]) -> Result<Vec<u8>, HostError> {
        let answer = self.host.call(operation, payload).map_err(|e| {
            let reason = match e {
                wapc::errors::Error::GuestCallFailure(s) => s,
                other => other.to_string(),
            };
            if reason.contains(INTERRUPTED) {
                HostError::Timeout(self.timeout)
            } else {
                HostError::Guest {
                    operation: operation.into(),
                    reason: trap_cause(&reason),
                }
            }
        })?;
        if answer.len() > ANSWER_ALLOWANCE + 2 * payload.len() {
            return Err(HostError::AnswerTooLarge {
                operation: operation.into(),
                bytes: answer.len(),
                payload: payload.len(),
            });
        }
        Ok(answer)
    }
}

/// A trap in one line, as every error of sidecarctl is. wasmtime-provider passes on only
/// the context of wasmtime's error, the wasm backtrace (the trap's own words stay behind
/// in the error's source): where it happened, and how deep.
fn trap_cause(reason: &str) -> String {
    let Some(trace) = reason.strip_prefix("error while executing at wasm backtrace:") else {
        return reason.to_string();
    };
    let frames: Vec<&str> = trace
        .split('\n')
        .flat_map(|l| l.split("  "))
        .filter_map(|f| f.trim().split_once(" - ").map(|(_, at)| at.trim()))
        .collect();
    match frames.first() {
        Some(innermost) => format!(
            "a wasm trap (a panic, an abort such as a failed allocation, a stack overflow) in {innermost}, {} frames deep",
            frames.len()
        ),
        None => "a wasm trap".to_string(),
    }
}

/// Host capabilities (`__host_call`). Our policies need only logging; everything else
/// is refused with a message the policy can pass on.
fn host_callback(
    _id: u64,
    binding: &str,
    namespace: &str,
    operation: &str,
    payload: &[u8],
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    match (binding, namespace, operation) {
        ("kubewarden", "tracing", "log") => {
            if std::env::var_os("SIDECARCTL_POLICY_LOG").is_some() {
                eprintln!("policy log: {}", String::from_utf8_lossy(payload));
            }
            Ok(Vec::new())
        }
        _ => Err(format!(
            "host capability {binding}/{namespace}/{operation} is not provided by sidecarctl"
        )
        .into()),
    }
}
