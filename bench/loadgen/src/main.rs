//! `cairn-loadgen`: N connections send the same request back to back for D seconds, then
//! print one JSON line: requests, errors, requests/s, p50 and p99 latency in milliseconds.
//!
//!     cairn-loadgen http URL BODY_FILE [--header 'K: V']... [-c N] [-d SECS]
//!     cairn-loadgen grpc HOST:PORT MODEL ROWS FEATURES FP32|FP64 [-c N] [-d SECS]
//!
//! HTTP is HTTP/1.1 with keep-alive, one connection per client. gRPC is one HTTP/2 channel
//! per client, sending `raw_input_contents` (as tritonclient does) of ROWS x FEATURES values.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

mod proto {
    tonic::include_proto!("inference");
}

struct Options {
    connections: usize,
    duration: Duration,
}

fn options(rest: &[String]) -> (Options, Vec<(String, String)>) {
    let mut options = Options { connections: 1, duration: Duration::from_secs(10) };
    let mut headers = Vec::new();
    let mut i = 0;
    while i < rest.len() {
        let value = rest.get(i + 1).cloned().unwrap_or_default();
        match rest[i].as_str() {
            "-c" => options.connections = value.parse().expect("-c takes a number"),
            "-d" => options.duration = Duration::from_secs_f64(value.parse().expect("-d takes seconds")),
            "--header" => {
                let (k, v) = value.split_once(':').expect("--header 'K: V'");
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    (options, headers)
}

/// Latencies of one client, and its error count.
type Tally = (Vec<Duration>, u64);

async fn http_client(url: hyper::Uri, body: Bytes, headers: Vec<(String, String)>, until: Instant) -> Tally {
    let authority = url.authority().expect("a URL with a host").clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await.expect("connect");
    stream.set_nodelay(true).expect("TCP_NODELAY");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.expect("handshake");
    let driver = tokio::spawn(connection);
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while Instant::now() < until {
        // Origin form (`/path`), as browsers and load tools send it; some servers refuse the
        // absolute form.
        let target = url.path_and_query().map_or("/", |p| p.as_str());
        let mut request = hyper::Request::post(target).header("host", authority.as_str());
        for (k, v) in &headers {
            request = request.header(k, v);
        }
        let request = request.body(Full::new(body.clone())).expect("a request");
        let started = Instant::now();
        match sender.send_request(request).await {
            Ok(response) => {
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                if ok {
                    latencies.push(started.elapsed());
                } else {
                    errors += 1;
                }
            }
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    driver.abort();
    (latencies, errors)
}

async fn grpc_client(endpoint: String, request: proto::ModelInferRequest, until: Instant) -> Tally {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("an endpoint")
        .tcp_nodelay(true)
        // Large messages (10,000 rows) should not wait on HTTP/2 flow control.
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .connect()
        .await
        .expect("connect");
    let mut client = proto::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX);
    let (mut latencies, mut errors) = (Vec::new(), 0);
    while Instant::now() < until {
        let started = Instant::now();
        match client.model_infer(request.clone()).await {
            Ok(_) => latencies.push(started.elapsed()),
            Err(_) => errors += 1,
        }
    }
    (latencies, errors)
}

fn report(tallies: Vec<Tally>, elapsed: Duration) {
    let mut latencies: Vec<Duration> = tallies.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let errors: u64 = tallies.iter().map(|(_, e)| e).sum();
    latencies.sort();
    let at = |q: f64| {
        latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": latencies.len(),
            "errors": errors,
            "rps": latencies.len() as f64 / elapsed.as_secs_f64(),
            "p50_ms": at(0.50),
            "p99_ms": at(0.99),
        })
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let started = Instant::now();
    match args.first().map(String::as_str) {
        Some("http") => {
            let url: hyper::Uri = args[1].parse().expect("a URL");
            let body = Bytes::from(std::fs::read(&args[2]).expect("the body file"));
            let (options, headers) = options(&args[3..]);
            let until = Instant::now() + options.duration;
            let clients: Vec<_> = (0..options.connections)
                .map(|_| tokio::spawn(http_client(url.clone(), body.clone(), headers.clone(), until)))
                .collect();
            let mut tallies = Vec::new();
            for client in clients {
                tallies.push(client.await.expect("a client"));
            }
            report(tallies, started.elapsed());
        }
        Some("grpc") => {
            let (address, model) = (&args[1], &args[2]);
            let rows: usize = args[3].parse().expect("ROWS");
            let features: usize = args[4].parse().expect("FEATURES");
            let datatype = args[5].clone();
            let (options, _) = options(&args[6..]);
            // The same deterministic values every time: x_ij = sin(i * FEATURES + j).
            let values = (0..rows * features).map(|k| (k as f64).sin());
            let raw: Vec<u8> = match datatype.as_str() {
                "FP32" => values.flat_map(|x| (x as f32).to_le_bytes()).collect(),
                "FP64" => values.flat_map(f64::to_le_bytes).collect(),
                other => panic!("datatype {other}: FP32 or FP64"),
            };
            let request = proto::ModelInferRequest {
                model_name: model.clone(),
                inputs: vec![proto::model_infer_request::InferInputTensor {
                    name: std::env::var("LOADGEN_INPUT").unwrap_or_else(|_| "features".into()),
                    datatype,
                    shape: vec![rows as i64, features as i64],
                    ..Default::default()
                }],
                raw_input_contents: vec![raw],
                ..Default::default()
            };
            let until = Instant::now() + options.duration;
            let clients: Vec<_> = (0..options.connections)
                .map(|_| tokio::spawn(grpc_client(format!("http://{address}"), request.clone(), until)))
                .collect();
            let mut tallies = Vec::new();
            for client in clients {
                tallies.push(client.await.expect("a client"));
            }
            report(tallies, started.elapsed());
        }
        _ => {
            eprintln!("usage: cairn-loadgen http URL BODY_FILE [--header 'K: V']... [-c N] [-d SECS]");
            eprintln!("       cairn-loadgen grpc HOST:PORT MODEL ROWS FEATURES FP32|FP64 [-c N] [-d SECS]");
            std::process::exit(2);
        }
    }
}
