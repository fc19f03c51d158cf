//! The `cairn` binary end to end, in one test binary (one link instead of ten): each module
//! is one area, driving the real binary in temporary Git repositories against real tools
//! (`git`, `mlflow`, `tritonclient`, moto, PostgreSQL) started on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

mod cli;
mod errors;
mod experiments;
mod pipeline;
mod readme;
mod registry;
mod remote;
mod safety;
mod serving;
mod tracking;
mod ui;
