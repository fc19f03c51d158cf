//! `cairn server`: the MLflow-compatible tracking API and the web UI in the foreground;
//! `cairn ui`: the web UI alone.

use std::sync::Arc;

use cairn_app::Workspace;

use crate::failure::Failure;

/// [`guard_exposure`] before any work, for a host given as an address (a name is checked
/// once it is bound).
pub fn guard_host(host: &str, port: u16, auth: bool, insecure: bool) -> Result<(), Failure> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) if !ip.is_loopback() && !auth && !insecure => {
            guard_exposure(&std::net::SocketAddr::new(ip, port), auth, insecure)
        }
        _ => Ok(()),
    }
}

/// A server that other machines can reach must authenticate them: without `auth` it is
/// refused, unless the user said `--insecure-no-auth` (then it warns, even with `--quiet`).
pub fn guard_exposure(address: &std::net::SocketAddr, auth: bool, insecure: bool) -> Result<(), Failure> {
    if cairn_http::is_loopback(address) || auth {
        return Ok(());
    }
    if !insecure {
        return Err(Failure::user(
            format!(
                "refusing to listen on {address}, which other machines can reach, without authentication"
            ),
            Some(
                "listen on 127.0.0.1 (the default); for `cairn server` add --auth; or say --insecure-no-auth if an authenticating proxy is in front",
            ),
        ));
    }
    eprintln!(
        "warning: listening on {address}, which other machines can reach, without authentication (--insecure-no-auth): anyone who can connect can read and change what this server serves"
    );
    Ok(())
}

/// `cairn server`: the MLflow-compatible tracking API, with the web UI (read-only: the
/// server does not know who is asking) at `/`, until Ctrl-C.
/// Where `cairn server` listens, and whether it requires a token.
pub struct Listen {
    pub host: String,
    pub port: u16,
    pub auth: bool,
    pub insecure_no_auth: bool,
}

pub fn serve(
    ws: Workspace,
    listen_on: &Listen,
    uploads: cairn_server::UploadLimits,
    quiet: bool,
) -> Result<(), Failure> {
    let state = cairn_app::tracking::state(&ws, uploads)?;
    let meta = state.meta.clone();
    let location = meta.location().to_owned();
    if listen_on.auth && meta.users()?.is_empty() {
        return Err(Failure::user(
            "--auth needs a user to authenticate, and there is none",
            Some(
                "create the first admin and a token: `cairn user add NAME --admin`, `cairn token create NAME --user NAME`",
            ),
        ));
    }
    let ui = cairn_ui::State { workspace: Arc::new(ws), mode: cairn_ui::Mode::ReadOnly };
    // Every write is recorded (after authentication, which names the user).
    let mut router = cairn_server::audited(
        cairn_server::router(state).merge(cairn_ui::router(ui)),
        meta.clone(),
        "anonymous",
    );
    if listen_on.auth {
        router = cairn_server::authenticated(router, meta);
    }
    listen(listen_on, router, |address| {
        if !quiet {
            let auth = if listen_on.auth { "; every request needs an API token" } else { "" };
            eprintln!(
                "cairn tracking server on http://{address} (metadata: {location}{auth}); Ctrl-C stops it\n  export MLFLOW_TRACKING_URI=http://{address}\n  UI: http://{address}/"
            );
        }
    })
}

/// `cairn ui`: the web UI until Ctrl-C. On loopback it acts as the local user.
pub fn ui(ws: Workspace, listen_on: &Listen, quiet: bool) -> Result<(), Failure> {
    let meta = Arc::new(ws.meta()?);
    let user = ws.user();
    let workspace = Arc::new(ws);
    // The local user's actions (approvals, alias moves) are recorded like a server's writes.
    let router = |mode| {
        cairn_server::audited(
            cairn_ui::router(cairn_ui::State { workspace: workspace.clone(), mode }),
            meta.clone(),
            &user,
        )
    };
    let host = listen_on.host.as_str();
    let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()) || host == "localhost";
    let mode = if loopback { cairn_ui::Mode::Local } else { cairn_ui::Mode::ReadOnly };
    listen(listen_on, router(mode), |address| {
        if !quiet {
            let acting = if loopback { "acting as you" } else { "read-only off loopback" };
            eprintln!("cairn ui on http://{address}/ ({acting}); Ctrl-C stops it");
        }
    })
}

/// Listens on `host:port` and serves `router` until Ctrl-C; prints the URL on stdout (for
/// scripts that start the server on port 0) after `started` has its say on stderr.
fn listen(
    listen_on: &Listen,
    router: cairn_ui::Router,
    started: impl FnOnce(&std::net::SocketAddr),
) -> Result<(), Failure> {
    let (host, port) = (listen_on.host.as_str(), listen_on.port);
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
        guard_exposure(&address, listen_on.auth, listen_on.insecure_no_auth)?;
        started(&address);
        println!("http://{address}");
        cairn_http::serve(listener, router, cairn_http::Limits::default(), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Failure::user(format!("the server stopped: {e}"), None))
    })
}
