//! `sidecarctl playground`: serves the playground page `make playground` builds, static
//! files only (the page runs the policies itself), on loopback by default.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Where `make playground` puts the page, relative to the repository.
pub const DEFAULT_DIR: &str = "build/playground";

/// Serves `dir` on `addr` until interrupted; `ready` is told the address bound (port 0
/// picks a free one).
pub fn serve(dir: &Path, addr: SocketAddr, ready: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    if !dir.join("index.html").is_file() {
        bail!(
            "{} has no index.html: build the playground first (make playground)",
            dir.display()
        );
    }
    let dir: PathBuf = dir.to_path_buf();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the playground's runtime")?
        .block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            ready(listener.local_addr()?);
            let app =
                axum::Router::new().fallback_service(tower_http::services::ServeDir::new(dir));
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await
                .context("the playground server stopped")
        })
}
