//! Cairn's web UI and the JSON API under it.
//!
//! `cairn ui` serves it for one repository on a loopback port; `cairn server` mounts the same
//! router at `/` next to the MLflow API. The API (`/api/v1/…`, described by
//! `/api/v1/openapi.json`) returns the application layer's result structs — the values the
//! CLI prints with `--json` — and the UI uses nothing else. The UI is one page of hand-written
//! HTML, CSS and JavaScript embedded in the binary (no build step, no CDN); MLflow's links
//! (`/#/experiments/ID/runs/RUN`) open the run's page.
//!
//! Errors have one shape: `{"error": {"code", "message", "hint"}}` with a 4xx status for what
//! the client can fix and 500 for the rest.
//!
//! Actions (moving an alias, approving a version) are allowed only where the acting user is
//! known: on a loopback `cairn ui`, the local user. On a team server they stay off until the
//! server knows who is asking.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
mod fragments;
pub mod layout;
mod openapi;
pub mod render;

use std::sync::Arc;

pub use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use cairn_app::Workspace;

pub use api::ApiError;

/// Whether the UI may change things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cairn ui` on loopback: the local user acts.
    Local,
    /// A team server without identity: read-only.
    ReadOnly,
}

/// What the handlers share.
#[derive(Clone)]
pub struct State {
    pub workspace: Arc<Workspace>,
    pub mode: Mode,
}

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

/// The UI at `/` and its API at `/api/v1`.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/", get(|| async { page(INDEX, "text/html; charset=utf-8") }))
        .route("/ui/app.js", get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/ui/app.css", get(|| async { page(STYLE, "text/css; charset=utf-8") }))
        .nest("/api/v1", api::routes())
        .merge(fragments::routes())
        .with_state(state)
}

fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Nothing is loaded from elsewhere; scripts only from this server.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
                ),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
}

/// The page sizes a browser may ask for.
pub const MAX_PAGE: usize = 1000;
