//! `sidecarctl serve`: an admission webhook engine that answers the API server the way
//! policy-server does, from the same policies.yml.

pub mod config;
mod metrics;

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::admission::{self, AdmissionResponse, Constraints};
use crate::evaluation::Evaluator;
use crate::oci::{self, Access};
use crate::runtime::{Pool, Runtime};

/// The most `--workers`: each has an instance slot, and each slot reserves its memory's
/// address space (4 GiB and a guard, as wasmtime lays out a wasm32 memory).
pub const MAX_WORKERS: usize = 1024;

pub struct Options {
    pub addr: SocketAddr,
    /// Certificate and key (PEM); plain HTTP when `None`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Evaluations run at the same time; the rest wait their turn.
    pub workers: usize,
    pub max_body_bytes: usize,
    /// What one instance's memory may grow to, in bytes.
    pub max_memory: usize,
    pub default_timeout: Duration,
    /// How long a shutdown waits for requests in flight.
    pub grace: Duration,
    /// How long a client may take to send a request's headers, and then its body: a
    /// slow client is cut off instead of holding a connection.
    pub read_timeout: Duration,
    /// How long a request waits for a free worker before it is answered 503.
    pub pool_wait: Duration,
    pub log_format: LogFormat,
}

/// How serve writes its log on stderr: policy-server's `--log-fmt` choices without OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event: time, level, message and `key=value` fields.
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// Sends serve's events to stderr in `format`. Once per process; a second call (a test
/// that serves twice in one process) keeps the first.
fn start_log(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

struct Served {
    evaluator: Evaluator,
    constraints: Constraints,
}

struct App {
    policies: HashMap<String, Served>,
    metrics: metrics::Metrics,
    draining: AtomicBool,
    /// One permit per worker, and so per instance slot: an evaluation holds one from
    /// before its instance exists until after it is gone, so the pool never runs out.
    workers: Arc<tokio::sync::Semaphore>,
    pool_wait: Duration,
}

#[derive(Clone, Copy)]
enum Origin {
    Validate,
    Audit,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Validate => "validate",
            Origin::Audit => "audit",
        }
    }
}

/// Loads every policy (compiled once, settings validated), then serves until SIGTERM or
/// SIGINT, finishing the requests in flight.
pub fn run(config_path: &std::path::Path, options: Options, access: &Access) -> anyhow::Result<()> {
    start_log(options.log_format);
    let entries = config::read(config_path)?;
    // A slot holds the largest instance any policy may have.
    let pool = Pool {
        instances: u32::try_from(options.workers).context("too many workers")?,
        max_memory: entries
            .iter()
            .filter_map(|e| e.max_memory)
            .fold(options.max_memory, usize::max),
    };
    let runtime = Runtime::pooled(pool)?;
    let mut policies = HashMap::new();
    for entry in entries {
        let timeout = entry.timeout.unwrap_or(options.default_timeout);
        let context = || format!("policy {:?}", entry.id);
        let (name, bytes) =
            oci::read_module(&runtime, &entry.module, access).with_context(context)?;
        check_metadata(&name, &bytes).with_context(context)?;
        let max_memory = entry.max_memory.unwrap_or(options.max_memory);
        let policy = runtime
            .load_limited(&name, &bytes, timeout, max_memory)
            .with_context(context)?;
        let evaluator = Evaluator::new(policy, entry.settings)
            .with_context(|| format!("policy {:?}", entry.id))?;
        tracing::info!(
            policy_id = %entry.id,
            module = %evaluator.policy.name,
            mode = entry.constraints.mode.as_str(),
            max_memory_mib = max_memory >> 20,
            allowed_to_mutate = entry.constraints.allowed_to_mutate,
            "policy loaded"
        );
        policies.insert(
            entry.id,
            Served {
                evaluator,
                constraints: entry.constraints,
            },
        );
    }
    tracing::info!(
        slots = pool.instances,
        slot_mib = pool.max_memory >> 20,
        "instance pool ready"
    );
    let app = Arc::new(App {
        policies,
        metrics: metrics::Metrics::new(pool),
        draining: AtomicBool::new(false),
        workers: Arc::new(tokio::sync::Semaphore::new(options.workers)),
        pool_wait: options.pool_wait,
    });
    // Evaluations are blocking wasm calls: they run on tokio's blocking pool, capped at
    // `workers` threads; the async workers only move bytes.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers.clamp(1, 2))
        .max_blocking_threads(options.workers.max(1))
        .enable_all()
        .build()
        .context("cannot start the server runtime")?
        .block_on(serve(app, options))
}

/// policy-server runs a waPC module only when its Kubewarden metadata says protocol v1.
/// A module with other metadata is refused here too; one with none (a test build, a
/// module not yet annotated) is served, with a warning that policy-server would not.
fn check_metadata(name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    match crate::metadata::read(bytes).with_context(|| name.to_string())? {
        Some(meta) => {
            if meta.execution_mode != "kubewarden-wapc" {
                bail!(
                    "{name}: executionMode {:?}; sidecarctl serves kubewarden-wapc policies",
                    meta.execution_mode
                );
            }
            if meta.protocol_version.as_deref() != Some("v1") {
                bail!(
                    "{name}: protocolVersion {:?} in its metadata; policy-server needs v1",
                    meta.protocol_version
                );
            }
        }
        None => tracing::warn!(
            module = name,
            "the module carries no Kubewarden metadata: policy-server would refuse it (sidecarctl annotate adds it)"
        ),
    }
    Ok(())
}

fn router(app: Arc<App>, max_body_bytes: usize, read_timeout: Duration) -> Router {
    Router::new()
        .route("/validate/{policy_id}", post(validate))
        .route("/audit/{policy_id}", post(audit))
        .route("/readiness", get(readiness))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn(move |request, next| {
            read_in_time(request, next, max_body_bytes, read_timeout)
        }))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(app)
}

/// The whole body within `read_timeout` of the headers (hyper bounds the time to send
/// those): a client that drips its body is answered 408 and let go, holding no worker;
/// evaluations start only on a body that has arrived.
async fn read_in_time(
    request: axum::extract::Request,
    next: axum::middleware::Next,
    max_body_bytes: usize,
    read_timeout: Duration,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(read_timeout, read_body(body, max_body_bytes)).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        Ok(Err(BodyError::TooLarge)) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max_body_bytes} bytes"),
        ),
        Ok(Err(BodyError::Read(e))) => error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        ),
        Err(_) => error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the body did not arrive within {read_timeout:?}"),
        ),
    }
}

/// How much of an oversized body is read and dropped before the 413 is sent. A client
/// still sending when the answer comes (a streamed HTTP/2 body has no length to refuse it
/// by) sees its stream reset instead of the 413; past this much, it does.
const DRAIN_BYTES: usize = 16 << 20;

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// The body, if it is at most `max` bytes; an oversized one is read on (and dropped) up to
/// `DRAIN_BYTES` so the client gets its 413.
async fn read_body(mut body: axum::body::Body, max: usize) -> Result<Bytes, BodyError> {
    use http_body_util::BodyExt as _;
    let mut kept: Vec<u8> = Vec::new();
    let mut dropped: Option<usize> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue;
        };
        match &mut dropped {
            Some(n) => {
                *n += data.len();
                if *n > DRAIN_BYTES {
                    return Err(BodyError::TooLarge);
                }
            }
            None if kept.len() + data.len() > max => {
                kept = Vec::new();
                dropped = Some(data.len());
            }
            None => kept.extend_from_slice(&data),
        }
    }
    match dropped {
        Some(_) => Err(BodyError::TooLarge),
        None => Ok(Bytes::from(kept)),
    }
}

async fn serve(app: Arc<App>, options: Options) -> anyhow::Result<()> {
    let handle = axum_server::Handle::<SocketAddr>::new();
    let service =
        router(app.clone(), options.max_body_bytes, options.read_timeout).into_make_service();
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let server = match &options.tls {
        Some((cert, key)) => {
            // rustls needs a process-wide crypto provider; ring is the one we build.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "cannot use {} and {} as the TLS certificate and key",
                        cert.display(),
                        key.display()
                    )
                })?;
            // TCP_NODELAY: a webhook's answer is one small write the API server waits on;
            // with Nagle's algorithm on, some answers waited for a delayed ACK, ~40 ms at
            // p99 behind a real API server (make e2e-bench).
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
                .acceptor(axum_server::accept::NoDelayAcceptor::new());
            let mut server = axum_server::bind(options.addr)
                .acceptor(acceptor)
                .handle(handle.clone());
            server
                .http_builder()
                .http1()
                .header_read_timeout(options.read_timeout);
            tokio::spawn(server.serve(service))
        }
        None => {
            let mut server = axum_server::bind(options.addr)
                .acceptor(axum_server::accept::NoDelayAcceptor::new())
                .handle(handle.clone());
            server
                .http_builder()
                .http1()
                .header_read_timeout(options.read_timeout);
            tokio::spawn(server.serve(service))
        }
    };
    let Some(bound) = handle.listening().await else {
        // The server ended before it listened: its error says why.
        return match server.await {
            Ok(Err(e)) => Err(e).with_context(|| format!("cannot listen on {}", options.addr)),
            _ => bail!("cannot listen on {}", options.addr),
        };
    };
    // Scripts and tests wait for this line (and read the port from it).
    println!("listening on {scheme}://{bound}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    shutdown_signal().await;
    app.draining.store(true, Ordering::SeqCst);
    tracing::info!("shutting down: finishing requests in flight");
    handle.graceful_shutdown(Some(options.grace));
    match server.await {
        Ok(result) => result.context("the server failed")?,
        Err(e) => bail!("the server failed: {e}"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn validate(
    State(app): State<Arc<App>>,
    UrlPath(policy_id): UrlPath<String>,
    body: Bytes,
) -> Response {
    answer(app, policy_id, body, Origin::Validate).await
}

async fn audit(
    State(app): State<Arc<App>>,
    UrlPath(policy_id): UrlPath<String>,
    body: Bytes,
) -> Response {
    answer(app, policy_id, body, Origin::Audit).await
}

async fn readiness(State(app): State<Arc<App>>) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    // Slots in use are the workers' permits out, read when asked.
    let pool = &app.metrics.pool;
    let free = i64::try_from(app.workers.available_permits()).unwrap_or(i64::MAX);
    pool.in_use.set(pool.slots.get() - free);
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        app.metrics.render(),
    )
        .into_response()
}

fn error(status: StatusCode, message: String) -> Response {
    (status, message + "\n").into_response()
}

async fn answer(app: Arc<App>, policy_id: String, body: Bytes, origin: Origin) -> Response {
    if !app.policies.contains_key(&policy_id) {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown policy {policy_id:?}"),
        );
    }
    let request = match review_request(&body) {
        Ok(request) => request,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(worker) = wait_for_worker(&app).await else {
        let mut answer = error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "every worker has been busy for {:?}; the webhook's failurePolicy decides",
                app.pool_wait
            ),
        );
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        return answer;
    };
    let task_app = app.clone();
    let evaluated = tokio::task::spawn_blocking(move || {
        let served = &task_app.policies[&policy_id];
        let started = Instant::now();
        let evaluation = served.evaluator.evaluate(&request);
        let elapsed = started.elapsed();
        drop(worker);
        let response = evaluation.response;
        if let Some(failure) = &evaluation.failure {
            let field = |pointer: &str| {
                request
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            tracing::error!(
                policy_id = %policy_id,
                request_uid = field("/uid"),
                kind = field("/kind/kind"),
                namespace = field("/namespace"),
                name = field("/name"),
                operation = field("/operation"),
                error = %failure,
                "policy evaluation failed"
            );
        }
        record(
            &task_app.metrics,
            &policy_id,
            served,
            &request,
            &response,
            origin,
            elapsed,
        );
        match origin {
            Origin::Validate => {
                let patched = response.patch.is_some();
                let answered = response.constrained(&policy_id, &served.constraints);
                if patched && !answered.allowed {
                    task_app
                        .metrics
                        .mutations_refused
                        .get_or_create(&metrics::Policy {
                            policy_name: policy_id.clone(),
                        })
                        .inc();
                }
                answered
            }
            // The audit scanner wants the policy's own verdict: no mode, no mutation guard.
            Origin::Audit => response,
        }
    })
    .await;
    match evaluated {
        Ok(response) => (
            [(header::CONTENT_TYPE, "application/json")],
            admission::review_response(&response).to_string(),
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the evaluation did not finish: {e}"),
        ),
    }
}

/// A worker's permit (and with it an instance slot), waiting at most `pool_wait`; `None`
/// when none came free in time. The metrics count who waits and who gave up.
async fn wait_for_worker(app: &App) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let pool = &app.metrics.pool;
    let permit = match app.workers.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            pool.waiting.inc();
            let waited =
                tokio::time::timeout(app.pool_wait, app.workers.clone().acquire_owned()).await;
            pool.waiting.dec();
            match waited {
                Ok(Ok(permit)) => permit,
                _ => {
                    pool.wait_timeouts.inc();
                    return None;
                }
            }
        }
    };
    Some(permit)
}

/// The AdmissionRequest of an AdmissionReview body, or why it is not one.
fn review_request(body: &[u8]) -> Result<Value, String> {
    let mut review: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not an AdmissionReview: invalid JSON: {e}"))?;
    let Some(request) = review.get_mut("request").filter(|r| r.is_object()) else {
        return Err("the body is not an AdmissionReview: it has no request".into());
    };
    if admission::uid_of(request).is_empty() {
        return Err("the AdmissionReview's request has no uid".into());
    }
    Ok(request.take())
}

fn record(
    metrics: &metrics::Metrics,
    policy_id: &str,
    served: &Served,
    request: &Value,
    response: &AdmissionResponse,
    origin: Origin,
    elapsed: Duration,
) {
    let text = |pointer: &str| {
        request
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    metrics.record(
        metrics::Evaluation {
            policy_name: policy_id.to_string(),
            policy_mode: served.constraints.mode.as_str().to_string(),
            request_origin: origin.as_str().to_string(),
            resource_kind: text("/kind/kind"),
            resource_request_operation: text("/operation"),
            accepted: response.allowed.to_string(),
            mutated: response.patch.is_some().to_string(),
        },
        response.status.as_ref().and_then(|s| s.code),
        elapsed,
    );
}
