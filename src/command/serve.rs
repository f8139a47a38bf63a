//! `serve`: the admission webhook, configured as policy-server is.

use sidecarctl::serve;

use anyhow::bail;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::ServeArgs;

/// `sidecarctl serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ServeArgs {
        config,
        addr,
        cert,
        key,
        insecure_plain_http,
        workers,
        max_body_bytes,
        max_memory_mib,
        read_timeout,
        policy_timeout,
        shutdown_grace,
        pool_wait_ms,
        log_fmt,
        registry,
    } = args;
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ if insecure_plain_http => None,
        _ => bail!(
            "serve needs --cert and --key (HTTPS), or --insecure-plain-http to serve plain HTTP"
        ),
    };
    if policy_timeout == 0 {
        bail!("--policy-timeout must be at least 1 second");
    }
    let workers = workers
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    if !(1..=serve::MAX_WORKERS).contains(&workers) {
        bail!(
            "--workers must be from 1 to {} (each reserves an instance slot's address space)",
            serve::MAX_WORKERS
        );
    }
    if max_memory_mib == 0 || max_memory_mib > 4096 {
        bail!("--max-memory-mib must be from 1 to 4096 (wasm32's whole address space)");
    }
    serve::run(
        &config,
        serve::Options {
            addr,
            tls,
            workers,
            max_body_bytes,
            max_memory: max_memory_mib << 20,
            default_timeout: Duration::from_secs(policy_timeout),
            grace: Duration::from_secs(shutdown_grace),
            read_timeout: Duration::from_secs(read_timeout.max(1)),
            pool_wait: Duration::from_millis(pool_wait_ms),
            log_format: log_fmt,
        },
        &registry.access(),
    )?;
    Ok(ExitCode::SUCCESS)
}
