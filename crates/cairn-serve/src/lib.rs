//! `cairn serve`: registered models over HTTP — a native JSON API, KServe v2 (the Open
//! Inference Protocol) and MLflow's scoring protocol — run by ONNX Runtime, routed by the
//! registry's aliases and rollouts, optionally batched, and logged prediction by prediction.
//!
//! - [`runtime`]: the [`runtime::Runtime`] trait and ONNX Runtime behind it (pooled sessions).
//! - [`python`]: MLflow models in Python worker processes, one environment per requirements.
//! - [`tensor`]: tensors, and JSON → typed inputs with errors that name the field.
//! - [`routing`]: targets, the registry watcher, canary and shadow routing.
//! - [`batch`]: adaptive batching.
//! - [`predlog`]: the prediction log (WAL + Parquet segments) and trace lookup.
//! - [`profiles`]: per-minute profiles of every version's inputs and outputs, rolled up.
//! - [`alerting`]: `monitor.yaml`'s rules evaluated over the profiles; alerts and webhooks.
//! - [`server`]: the HTTP protocols.
//! - [`metrics`]: Prometheus metrics.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod alerting;
pub mod batch;
pub mod encoding;
pub mod grpc;
pub mod metrics;
#[cfg(feature = "onnx")]
pub mod onnx;
pub mod predlog;
pub mod profiles;
pub mod python;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod tensor;
