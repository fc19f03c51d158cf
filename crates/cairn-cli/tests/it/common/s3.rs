//! A real S3-protocol server for tests: `moto_server` (PyPI `moto[server]`), started on
//! 127.0.0.1 with a free port chosen by the server itself, stopped when dropped.
//!
//! The server comes from `CAIRN_TEST_MOTO_SERVER` if set, else from a virtual environment
//! under `target/test-tools/`, which the first test that needs it creates (`.ci/run` does it
//! ahead of time). Nobody has to start anything by hand.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Pinned so that every machine tests against the same server.
const MOTO: &str = "moto[server]==5.2.1";

pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

fn moto_server() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_TEST_MOTO_SERVER") {
        return PathBuf::from(path);
    }
    super::tools::venv_tool("venv", MOTO, "moto_server")
}

impl S3Server {
    /// Starts a server and creates `buckets`.
    pub fn start(buckets: &[&str]) -> Self {
        let server = Self::spawn(false);
        for bucket in buckets {
            server.request("PUT", &format!("/{bucket}"));
        }
        server
    }

    /// Starts a server that checks credentials (moto's IAM emulation): every key is unknown.
    pub fn start_authenticating() -> Self {
        Self::spawn(true)
    }

    fn spawn(authenticate: bool) -> Self {
        let mut command = Command::new(moto_server());
        if authenticate {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let mut child = command
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto_server starts");
        // It prints " * Running on http://127.0.0.1:PORT" on stderr.
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(at) = line.find("http://127.0.0.1:") {
                    let _ = tx.send(line[at..].trim().to_owned());
                    sent = true;
                }
            }
        });
        let endpoint = rx.recv_timeout(Duration::from_secs(60)).expect("moto_server reports its address");
        S3Server { child, endpoint }
    }

    fn address(&self) -> &str {
        self.endpoint.trim_start_matches("http://")
    }

    /// A bare HTTP request (moto accepts unsigned ones); returns the status code.
    pub fn request(&self, method: &str, path: &str) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match TcpStream::connect(self.address()) {
                Ok(mut stream) => {
                    write!(
                        stream,
                        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        self.address()
                    )
                    .unwrap();
                    let mut response = String::new();
                    let _ = stream.read_to_string(&mut response);
                    return response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => panic!("cannot reach moto_server at {}: {e}", self.endpoint),
            }
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
