//! `cairn server`: the MLflow-compatible tracking API in the foreground.

use cairn_app::Workspace;

use crate::failure::Failure;

/// Warns (even with `--quiet`) when a server listens where other machines can reach it:
/// Cairn does not authenticate clients yet.
pub fn warn_if_exposed(address: &std::net::SocketAddr) {
    if !cairn_http::is_loopback(address) {
        eprintln!(
            "warning: listening on {address}, which other machines can reach, without authentication: anyone who can connect can read and change what this server serves; listen on 127.0.0.1 (the default), or put an authenticating proxy in front"
        );
    }
}

/// `cairn server`: the MLflow-compatible tracking API until Ctrl-C.
pub fn serve(
    ws: &Workspace,
    host: &str,
    port: u16,
    uploads: cairn_server::UploadLimits,
    quiet: bool,
) -> Result<(), Failure> {
    let state = cairn_app::tracking::state(ws, uploads)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::user(format!("cannot start the server's runtime: {e}"), None))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((host, port)).await.map_err(|e| {
            Failure::user(
                format!("cannot listen on {host}:{port}: {e}"),
                Some("choose another port with --port (0 picks a free one), or stop what holds this one"),
            )
        })?;
        let address = listener
            .local_addr()
            .map_err(|e| Failure::user(format!("cannot read the listening address: {e}"), None))?;
        warn_if_exposed(&address);
        if !quiet {
            eprintln!(
                "cairn tracking server on http://{address} (metadata: {}); Ctrl-C stops it\n  export MLFLOW_TRACKING_URI=http://{address}",
                state.meta.location()
            );
        }
        // Stdout carries only the URL, for scripts that start the server on port 0.
        println!("http://{address}");
        cairn_server::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Failure::user(format!("the server stopped: {e}"), None))
    })
}
