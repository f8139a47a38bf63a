//! The wasmtime side of a waPC instance: one `Store`, one WASI context and one instance
//! from a pre-linked `InstancePre`, with the waPC host functions. `wapc::WapcHost` keeps
//! the protocol (the request, response and error buffers); this is its engine.
//!
//! Why not wasmtime-provider, which policy-server uses: its `rehydrate` clones the whole
//! `Linker` (every WASI and waPC function, rehashed) and builds a `Store` and a WASI
//! context that `init` then throws away for a second pair. Measured on the null policy
//! with the pooling allocator (`sidecarctl bench --instance fresh`, instrumented, one
//! run): 41 µs in `rehydrate`, 14 µs in `init`, 18 µs dropping both, around a 21 µs
//! call. Nothing in its builder turns that off, so the fresh instance per request that
//! policy-server's semantics require cost 3–4× the evaluation. This engine does the same
//! protocol with one store, one context and a shared, already linked `InstancePre`.
//!
//! Unlike wasmtime-provider, a guest that hands the host a pointer outside its memory
//! gets a trap, not a host panic.

use std::sync::{Arc, Mutex};

use wapc::{ModuleState, WebAssemblyEngineProvider, wapc_functions as wapc_fn};
use wasmtime::{
    Caller, Engine, InstancePre, Linker, Memory, Module, Store, StoreLimits, StoreLimitsBuilder,
    Trap, TypedFunc,
};
use wasmtime_wasi::p1::WasiP1Ctx;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the engine stopped an instance's start or a call, as wasmtime said it. waPC carries
/// only text from an engine to its host; this travels beside it, so the host never reads
/// a cause back out of a message (a guest's own error may say anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineFailure {
    /// The epoch deadline passed.
    Interrupted,
    /// Every slot of the instance pool is taken.
    PoolExhausted,
    /// A trap, in one line: where it happened and how deep.
    Trapped(String),
    /// A host function refused the guest (a span outside its memory), in its words.
    Refused(String),
}

/// Where a provider leaves its last failure for the instance that owns it.
pub type FailureSlot = Arc<Mutex<Option<EngineFailure>>>;

/// What a store holds for its one instance.
pub struct Guest {
    wasi: WasiP1Ctx,
    limits: StoreLimits,
    host: Arc<ModuleState>,
    /// The instance's exported `memory`, once instantiated.
    memory: Option<Memory>,
}

/// A module linked once against WASI and the waPC host functions; every instance of the
/// policy starts from it.
#[derive(Clone)]
pub struct Prepared {
    engine: Engine,
    pre: InstancePre<Guest>,
    max_memory: usize,
    /// The epoch deadline of `_start` and `wapc_init` together, and then of each call.
    ticks: u64,
}

impl Prepared {
    pub fn new(
        engine: &Engine,
        module: &Module,
        max_memory: usize,
        ticks: u64,
    ) -> wasmtime::Result<Self> {
        let mut linker: Linker<Guest> = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |g: &mut Guest| &mut g.wasi)?;
        // Older toolchains (TinyGo) import WASI as `wasi_unstable`; policy-server links it.
        wasmtime_wasi::p0::add_to_linker_sync(&mut linker, |g: &mut Guest| &mut g.wasi)?;
        add_wapc_functions(&mut linker)?;
        Ok(Prepared {
            engine: engine.clone(),
            pre: linker.instantiate_pre(module)?,
            max_memory,
            ticks,
        })
    }

    /// An engine for one `WapcHost`; the instance is made when the host calls `init`.
    /// Its failures are left in `failure`.
    pub fn provider(&self, failure: FailureSlot) -> Provider {
        Provider {
            prepared: self.clone(),
            live: None,
            failure,
        }
    }
}

struct Live {
    store: Store<Guest>,
    guest_call: TypedFunc<(i32, i32), i32>,
}

pub struct Provider {
    prepared: Prepared,
    live: Option<Live>,
    failure: FailureSlot,
}

impl Provider {
    /// Records `failure` for the instance and gives waPC its text.
    fn fail(&self, failure: EngineFailure) -> String {
        let text = failure.to_string();
        if let Ok(mut slot) = self.failure.lock() {
            *slot = Some(failure);
        }
        text
    }
}

impl WebAssemblyEngineProvider for Provider {
    fn init(&mut self, host: Arc<ModuleState>) -> Result<(), BoxError> {
        let p = &self.prepared;
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        // As policy-server: a policy's own output goes where the engine's goes. Its stdin
        // is empty: a policy has nothing to read there, and the engine's own stdin is not
        // the policy's to consume (inheriting it also cost a tokio handle per instance).
        wasi.inherit_stdout().inherit_stderr();
        let guest = Guest {
            wasi: wasi.build_p1(),
            limits: StoreLimitsBuilder::new()
                .memory_size(p.max_memory)
                // Tables hold function references; policies never grow theirs.
                .table_elements(100_000)
                .build(),
            host,
            memory: None,
        };
        let mut store = Store::new(&p.engine, guest);
        store.limiter(|g| &mut g.limits);
        store.set_epoch_deadline(p.ticks);
        let instance = p.pre.instantiate(&mut store).map_err(|e| -> BoxError {
            if e.is::<wasmtime::PoolConcurrencyLimitError>() {
                self.fail(EngineFailure::PoolExhausted).into()
            } else {
                e.into()
            }
        })?;
        store.data_mut().memory = instance.get_memory(&mut store, "memory");
        for start in wapc_fn::REQUIRED_STARTS {
            let Ok(function) = instance.get_typed_func::<(), ()>(&mut store, start) else {
                continue;
            };
            store.set_epoch_deadline(p.ticks);
            if let Err(e) = function.call(&mut store, ()) {
                // TinyGo's `_start` ends with `proc_exit(0)`, which is a success.
                if e.downcast_ref::<wasmtime_wasi::I32Exit>()
                    .is_some_and(|exit| exit.0 == 0)
                {
                    continue;
                }
                return Err(self.fail(failure(start, &e)).into());
            }
        }
        let guest_call = instance.get_typed_func(&mut store, wapc_fn::GUEST_CALL)?;
        self.live = Some(Live { store, guest_call });
        Ok(())
    }

    fn call(&mut self, op_length: i32, msg_length: i32) -> Result<i32, BoxError> {
        let live = self
            .live
            .as_mut()
            .ok_or("the instance was not initialised")?;
        live.store.set_epoch_deadline(self.prepared.ticks);
        let result = live
            .guest_call
            .call(&mut live.store, (op_length, msg_length));
        let host = live.store.data().host.clone();
        match result {
            Ok(result) => Ok(result),
            Err(e) => {
                host.set_guest_error(self.fail(failure(wapc_fn::GUEST_CALL, &e)));
                Ok(0)
            }
        }
    }

    fn replace(&mut self, _module: &[u8]) -> Result<(), BoxError> {
        Err("sidecarctl does not swap a live instance's module".into())
    }
}

impl std::fmt::Display for EngineFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineFailure::Interrupted => write!(f, "guest code interrupted at its deadline"),
            EngineFailure::PoolExhausted => write!(f, "every instance slot of the pool is in use"),
            EngineFailure::Trapped(what) | EngineFailure::Refused(what) => write!(f, "{what}"),
        }
    }
}

/// A failed guest function: a deadline, a trap (where, from wasmtime's wasm backtrace,
/// and how deep), or a host function's refusal in its own words, which wasmtime keeps
/// under the backtrace.
fn failure(function: &str, error: &wasmtime::Error) -> EngineFailure {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => EngineFailure::Interrupted,
        Some(_) => {
            let frames = error
                .downcast_ref::<wasmtime::WasmBacktrace>()
                .map(|b| b.frames())
                .unwrap_or_default();
            EngineFailure::Trapped(match frames.first() {
                Some(innermost) => format!(
                    "a wasm trap (a panic, an abort such as a failed allocation, a stack overflow) in {}!{}, {} frames deep",
                    innermost.module().name().unwrap_or("<unknown>"),
                    innermost.func_name().map_or_else(
                        || format!("<wasm function {}>", innermost.func_index()),
                        |name| name.to_string()
                    ),
                    frames.len()
                ),
                None => format!("a wasm trap in {function}"),
            })
        }
        None => EngineFailure::Refused(error.root_cause().to_string()),
    }
}

/// The bytes at `ptr..ptr + len` of the guest's memory, or a trap naming the function.
fn read(
    caller: &Caller<'_, Guest>,
    function: &str,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller, function)?;
    let range = span(ptr, len);
    range
        .clone()
        .and_then(|r| memory.data(caller).get(r))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| outside(function, ptr, len))
}

fn write(
    caller: &mut Caller<'_, Guest>,
    function: &str,
    ptr: i32,
    bytes: &[u8],
) -> wasmtime::Result<()> {
    let memory = memory(caller, function)?;
    let len = i32::try_from(bytes.len()).unwrap_or(i32::MAX);
    let target = span(ptr, len)
        .and_then(|r| memory.data_mut(&mut *caller).get_mut(r))
        .ok_or_else(|| outside(function, ptr, len))?;
    target.copy_from_slice(bytes);
    Ok(())
}

fn read_text(
    caller: &Caller<'_, Guest>,
    function: &str,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<String> {
    String::from_utf8(read(caller, function, ptr, len)?)
        .map_err(|_| wasmtime::format_err!("{function}: the guest's text is not UTF-8"))
}

/// A guest's pointers and lengths are wasm32 offsets: unsigned, whatever the i32 says.
fn span(ptr: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    Some(start..start.checked_add(len as u32 as usize)?)
}

fn outside(function: &str, ptr: i32, len: i32) -> wasmtime::Error {
    wasmtime::format_err!(
        "{function}: {} bytes at offset {} are outside the guest's memory",
        len as u32,
        ptr as u32
    )
}

fn memory(caller: &Caller<'_, Guest>, function: &str) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::format_err!("{function}: the module exports no memory"))
}

fn add_wapc_functions(linker: &mut Linker<Guest>) -> wasmtime::Result<()> {
    use wapc::HOST_NAMESPACE as NS;
    linker.func_wrap(
        NS,
        wapc_fn::GUEST_REQUEST_FN,
        |mut caller: Caller<'_, Guest>, op_ptr: i32, ptr: i32| {
            if let Some(invocation) = caller.data().host.get_guest_request() {
                write(&mut caller, wapc_fn::GUEST_REQUEST_FN, ptr, &invocation.msg)?;
                let op = invocation.operation.as_bytes();
                write(&mut caller, wapc_fn::GUEST_REQUEST_FN, op_ptr, op)?;
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::GUEST_RESPONSE_FN,
        |caller: Caller<'_, Guest>, ptr: i32, len: i32| {
            let bytes = read(&caller, wapc_fn::GUEST_RESPONSE_FN, ptr, len)?;
            caller.data().host.set_guest_response(bytes);
            Ok(())
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::GUEST_ERROR_FN,
        |caller: Caller<'_, Guest>, ptr: i32, len: i32| {
            let text = read_text(&caller, wapc_fn::GUEST_ERROR_FN, ptr, len)?;
            caller.data().host.set_guest_error(text);
            Ok(())
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::HOST_CALL,
        |caller: Caller<'_, Guest>,
         binding_ptr: i32,
         binding_len: i32,
         namespace_ptr: i32,
         namespace_len: i32,
         operation_ptr: i32,
         operation_len: i32,
         ptr: i32,
         len: i32| {
            let f = wapc_fn::HOST_CALL;
            let binding = read_text(&caller, f, binding_ptr, binding_len)?;
            let namespace = read_text(&caller, f, namespace_ptr, namespace_len)?;
            let operation = read_text(&caller, f, operation_ptr, operation_len)?;
            let payload = read(&caller, f, ptr, len)?;
            let host = &caller.data().host;
            Ok(host
                .do_host_call(&binding, &namespace, &operation, &payload)
                .unwrap_or(0))
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::HOST_RESPONSE_FN,
        |mut caller: Caller<'_, Guest>, ptr: i32| {
            let host = caller.data().host.clone();
            host.with_host_response(|bytes| {
                write(&mut caller, wapc_fn::HOST_RESPONSE_FN, ptr, bytes)
            })
            .unwrap_or(Ok(()))
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::HOST_RESPONSE_LEN_FN,
        |caller: Caller<'_, Guest>| {
            i32::try_from(caller.data().host.host_response_len()).unwrap_or(i32::MAX)
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::HOST_ERROR_FN,
        |mut caller: Caller<'_, Guest>, ptr: i32| match caller.data().host.get_host_error() {
            Some(text) => write(&mut caller, wapc_fn::HOST_ERROR_FN, ptr, text.as_bytes()),
            None => Ok(()),
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::HOST_ERROR_LEN_FN,
        |caller: Caller<'_, Guest>| {
            let len = caller.data().host.get_host_error().map_or(0, |e| e.len());
            i32::try_from(len).unwrap_or(i32::MAX)
        },
    )?;
    linker.func_wrap(
        NS,
        wapc_fn::HOST_CONSOLE_LOG,
        |caller: Caller<'_, Guest>, ptr: i32, len: i32| {
            let text = read_text(&caller, wapc_fn::HOST_CONSOLE_LOG, ptr, len)?;
            caller.data().host.do_console_log(&text);
            Ok(())
        },
    )?;
    Ok(())
}
