//! The wasmtime side: one engine, modules compiled once (and cached on disk), a fresh
//! waPC instance per evaluation with an epoch deadline, as policy-server runs policies.
//! Instances come from wasmtime's pooling allocator: a fixed number of slots, each with
//! its linear memory reserved up front, so a fresh instance maps its module's
//! copy-on-write memory image into a slot instead of asking the kernel for memory.

mod provider;

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;
use wapc::WapcHost;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, Module, PoolingAllocationConfig,
};

use provider::{EngineFailure, FailureSlot, Prepared};

/// One epoch tick. policy-server ticks once a second; a finer tick lets tests use short
/// deadlines and keeps the default (2 s) within one tick of exact.
pub const TICK: Duration = Duration::from_millis(100);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// What one instance's linear memory may grow to unless told otherwise. The policies need
/// a few MiB for a 200-container pod and about ten times a request's size for a request
/// that is mostly one big annotation (the payload, the object's text, the answer and its
/// JSON each hold it): a 16 MiB request, five times what an API server sends, takes the
/// injector past 128 MiB (`tests/allocator.rs`). A module that allocates without end is
/// stopped here (its `memory.grow` fails, and a Rust guest aborts) instead of at wasm32's
/// 4 GiB.
pub const DEFAULT_MAX_MEMORY: usize = 256 << 20;

/// Instances alive at once in a process that does not say (`serve` sizes its pool from
/// `--workers`): a `bench` of reused instances holds one per policy.
pub const DEFAULT_INSTANCES: u32 = 32;

/// How much of a slot's memory stays mapped when its instance ends, reset in place to the
/// module's image: the next instance then takes no page faults on it. With the kernel's
/// PAGEMAP_SCAN (Linux 6.7) only the pages the instance wrote are reset; without it the
/// whole span would be, so nothing is kept. A policy evaluating an ordinary pod writes
/// 1–3 MiB.
const KEEP_RESIDENT: usize = 16 << 20;

/// The instance pool: how many instances may be alive at once, and the most memory any
/// one of them may grow to (each slot reserves that much address space, not memory).
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    pub instances: u32,
    pub max_memory: usize,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            instances: DEFAULT_INSTANCES,
            max_memory: DEFAULT_MAX_MEMORY,
        }
    }
}

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
    #[error(
        "{path} declares {declared_mib} MiB of initial memory, more than the {limit_mib} MiB its instances may have"
    )]
    MemoryTooSmall {
        path: String,
        declared_mib: u64,
        limit_mib: usize,
    },
    #[error("a memory limit of {limit_mib} MiB is larger than the pool's {pool_mib} MiB slots")]
    LimitAbovePool { limit_mib: usize, pool_mib: usize },
    #[error("every instance slot of the pool is in use")]
    PoolExhausted,
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
    pool: Pool,
}

impl Runtime {
    /// The engine, with compiled modules cached where `SIDECARCTL_CACHE_DIR` says.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_cache(cache_dir())
    }

    /// The engine, with compiled modules cached in `cache_dir` (none: not cached).
    pub fn with_cache(cache_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::with_pool(cache_dir, Pool::default())
    }

    /// The engine with an instance pool of `pool`'s size, cached as [`Runtime::new`] is.
    pub fn pooled(pool: Pool) -> anyhow::Result<Self> {
        Self::with_pool(cache_dir(), pool)
    }

    fn with_pool(cache_dir: Option<PathBuf>, pool: Pool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(pool)));
        config.memory_init_cow(true);
        let engine =
            Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot start wasmtime: {e}"))?;
        start_ticker(&engine);
        Ok(Runtime {
            engine,
            cache_dir,
            pool,
        })
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
        self.load_limited(name, bytes, timeout, self.pool.max_memory)
    }

    /// [`Runtime::load_bytes`], its instances' memory limited to `max_memory` bytes.
    pub fn load_limited(
        &self,
        name: &str,
        bytes: &[u8],
        timeout: Duration,
        max_memory: usize,
    ) -> Result<Policy, HostError> {
        if max_memory > self.pool.max_memory {
            return Err(HostError::LimitAbovePool {
                limit_mib: max_memory >> 20,
                pool_mib: self.pool.max_memory >> 20,
            });
        }
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
        let declared = module
            .resources_required()
            .max_initial_memory_size
            .unwrap_or(0)
            .saturating_mul(64 << 10);
        if declared > max_memory as u64 {
            return Err(HostError::MemoryTooSmall {
                path: name.into(),
                declared_mib: declared.div_ceil(1 << 20),
                limit_mib: max_memory >> 20,
            });
        }
        let ticks = timeout.as_millis().div_ceil(TICK.as_millis()).max(1) as u64;
        let prepared = Prepared::new(&self.engine, &module, max_memory, ticks).map_err(|e| {
            HostError::Prepare {
                path: name.into(),
                reason: e.to_string(),
            }
        })?;
        Ok(Policy {
            name: name.into(),
            prepared,
            timeout,
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

/// The pooling allocator for `pool`: one memory and one table per instance (what a
/// waPC policy has), slots kept warm for the module that last used them, so its
/// copy-on-write image stays mapped.
fn pooling(pool: Pool) -> PoolingAllocationConfig {
    let n = pool.instances.max(1);
    let scan = PoolingAllocationConfig::is_pagemap_scan_available();
    let mut config = PoolingAllocationConfig::new();
    config
        .total_core_instances(n)
        .total_memories(n)
        .total_tables(n)
        .max_memory_size(pool.max_memory)
        .max_unused_warm_slots(n)
        .table_keep_resident(64 << 10)
        .linear_memory_keep_resident(if scan { KEEP_RESIDENT } else { 0 })
        .pagemap_scan(if scan { Enabled::Yes } else { Enabled::No });
    config
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
    prepared: Prepared,
    timeout: Duration,
}

impl Policy {
    /// A fresh instance: `_start` and `wapc_init` have run.
    pub fn instantiate(&self) -> Result<Instance, HostError> {
        let failure = FailureSlot::default();
        let provider = self.prepared.provider(failure.clone());
        let host = WapcHost::new(Box::new(provider), Some(Box::new(host_callback))).map_err(
            |e| match take(&failure) {
                Some(EngineFailure::Interrupted) => HostError::Timeout(self.timeout),
                Some(EngineFailure::PoolExhausted) => HostError::PoolExhausted,
                Some(other) => HostError::Init(other.to_string()),
                None => HostError::Init(e.to_string()),
            },
        )?;
        Ok(Instance {
            host,
            timeout: self.timeout,
            failure,
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
    failure: FailureSlot,
}

impl Instance {
    pub fn call(&self, operation: &str, payload: &[u8]) -> Result<Vec<u8>, HostError> {
        let answer = self.host.call(operation, payload).map_err(|e| {
            let guest = |reason: String| HostError::Guest {
                operation: operation.into(),
                reason,
            };
            match take(&self.failure) {
                Some(EngineFailure::Interrupted) => HostError::Timeout(self.timeout),
                Some(EngineFailure::PoolExhausted) => HostError::PoolExhausted,
                Some(EngineFailure::Trapped(what) | EngineFailure::Refused(what)) => guest(what),
                // The engine did not fail: the guest reported an error of its own.
                None => guest(match e {
                    wapc::errors::Error::GuestCallFailure(s) => s,
                    other => other.to_string(),
                }),
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

/// The failure the engine left, if any, leaving the slot empty for the next call.
fn take(slot: &FailureSlot) -> Option<EngineFailure> {
    slot.lock().ok()?.take()
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
