//! The HTTP listener behind `cairn server` and `cairn serve`, hardened for a network where
//! clients may be slow, broken or hostile.
//!
//! * **Header timeout.** A client must send a request's complete headers within
//!   [`Limits::header_timeout`] of the connection opening (or of the previous response on a
//!   kept-alive connection), or the connection is closed: a slowloris that dribbles headers
//!   holds a connection for seconds, not forever.
//! * **Body timeout.** Between two chunks of a request body at most [`Limits::body_timeout`]
//!   may pass, or the request fails (`408`-style error from the body) and the connection
//!   closes. Large uploads are fine as long as bytes keep arriving.
//! * **Connection limit.** At most [`Limits::max_connections`] connections are served at
//!   once; further ones wait in the kernel's accept queue instead of exhausting file
//!   descriptors or memory.
//! * **Graceful shutdown.** When the shutdown future completes, the listener closes, requests
//!   in flight finish, and then [`serve`] returns; no connection task is left running.
//!
//! ```
//! # async fn example() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
//! let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
//! cairn_http::serve(listener, app, cairn_http::Limits::default(), async {}).await
//! # }
//! ```

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long and how many: the knobs of [`serve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time to receive a request's headers.
    pub header_timeout: Duration,
    /// Longest pause between two chunks of a request body.
    pub body_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// The address a request's connection came from (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// Whether an address to listen on can be reached only from this machine.
pub fn is_loopback(address: &SocketAddr) -> bool {
    match address.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes, then waits for
/// the requests in flight.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout));
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) if is_transient(&error) => {
                    // Out of file descriptors or a connection reset before it was taken: not
                    // the listener's fault. Back off a moment instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => return Err(error),
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service =
            TowerToHyperService::new(router.clone().map_request(move |request: hyper::Request<Incoming>| {
                // Where the request came from, for whoever records it (the audit log).
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(Peer(peer));
                request
            }));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        // Each connection's task ends when its connection does; `graceful.shutdown()` below
        // waits for every one of them.
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(error.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock)
        || matches!(error.raw_os_error(), Some(23 | 24)) // ENFILE, EMFILE
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(
        limits: Limits,
    ) -> (SocketAddr, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "hello" })).route(
            "/echo",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, app, limits, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        (address, stop, server)
    }

    async fn get(address: SocketAddr) -> String {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        reply
    }

    /// Reads until the server closes the connection; how long that took.
    async fn closed_after(stream: &mut tokio::net::TcpStream) -> Duration {
        let started = Instant::now();
        let mut buffer = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
                Ok(Ok(_)) => {}
                Err(_) => panic!("the server kept a slow client for 10 s"),
            }
        }
    }

    #[tokio::test]
    async fn slow_clients_are_dropped_and_others_are_served() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            max_connections: 64,
        };
        let (address, stop, server) = start(limits).await;
        // A bounded slowloris: twenty connections that send half a request line, one byte at
        // a time, and never finish.
        let mut slow = Vec::new();
        for _ in 0..20 {
            let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
            stream.write_all(b"GET / HT").await.unwrap();
            slow.push(stream);
        }
        // Meanwhile, a normal client is answered.
        assert!(get(address).await.contains("hello"));
        for stream in &mut slow {
            let _ = stream.write_all(b"T").await;
            assert!(closed_after(stream).await < Duration::from_secs(3));
        }
        // A body that stops arriving fails and the connection closes.
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\nonly a little")
            .await
            .unwrap();
        assert!(closed_after(&mut stream).await < Duration::from_secs(3));
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_their_turn() {
        let limits =
            Limits { header_timeout: Duration::from_millis(500), max_connections: 2, ..Limits::default() };
        let (address, stop, server) = start(limits).await;
        // Two idle connections take both permits...
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so a third is not served until the header timeout frees one.
        let started = Instant::now();
        assert!(get(address).await.contains("hello"));
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback(&"127.0.0.1:80".parse().unwrap()));
        assert!(is_loopback(&"[::1]:80".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0:80".parse().unwrap()));
        assert!(!is_loopback(&"[::]:80".parse().unwrap()));
        assert!(!is_loopback(&"192.168.1.2:80".parse().unwrap()));
    }
}
