//! Authentication for a team server: every request but `GET /health` carries an API token,
//! as the `mlflow` client sends one — `MLFLOW_TRACKING_TOKEN` (`Authorization: Bearer …`), or
//! `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` with the token as the password
//! (`Authorization: Basic …`, where the user name must be the token's user). A missing,
//! malformed, unknown, expired or revoked token is a 401 that says which, in the error shape
//! the `mlflow` client prints, and the request goes no further. The identity is attached to
//! the request for what runs after.
//!
//! [`audited`] records every write (any method but GET, HEAD and OPTIONS) in the store's
//! append-only audit log after it is answered: the user, the client's address, the method and
//! path, the object it names, the status, and the start of the JSON body it sent.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cairn_meta::Store;
use cairn_meta::identity::Identity;
use serde_json::json;

/// The most of a request body the audit log keeps.
const AUDIT_BODY: usize = 4 << 10;
/// Bodies larger than this (artifact uploads) are not read for the audit log.
const AUDIT_READ: u64 = 2 << 20;

/// `router` with every write recorded in `meta`'s audit log, as the authenticated user or,
/// where nobody authenticates, as `unauthenticated_as` (the local user of `cairn ui`,
/// `anonymous` on a server without `--auth`).
pub fn audited(router: axum::Router, meta: Arc<Store>, unauthenticated_as: &str) -> axum::Router {
    let state = Arc::new(Audit { meta, unauthenticated_as: unauthenticated_as.to_owned() });
    router.layer(axum::middleware::from_fn_with_state(state, record_write))
}

struct Audit {
    meta: Arc<Store>,
    unauthenticated_as: String,
}

/// The object a write names: ids and names from its JSON body, or an artifact's path.
fn object_of(path: &str, body: &serde_json::Value) -> String {
    if let Some((_, artifact)) = path.split_once("/artifacts/") {
        return artifact.to_owned();
    }
    let keys = ["run_id", "run_uuid", "experiment_id", "model_id", "name", "version", "alias", "key"];
    keys.iter()
        .filter_map(|k| {
            let v = body.get(k)?;
            Some(format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn record_write(State(audit): State<Arc<Audit>>, request: Request, next: Next) -> Response {
    use axum::http::Method;
    if matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let user = request
        .extensions()
        .get::<Identity>()
        .map_or_else(|| audit.unauthenticated_as.clone(), |i| i.user.clone());
    let address =
        request.extensions().get::<cairn_http::Peer>().map_or_else(String::new, |p| p.0.to_string());
    let small = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|n| n <= AUDIT_READ);
    let (request, body) = if small && !path.contains("/artifacts/") {
        let (parts, body) = request.into_parts();
        match axum::body::to_bytes(body, AUDIT_READ as usize).await {
            Ok(bytes) => {
                let kept = bytes.clone();
                (Request::from_parts(parts, axum::body::Body::from(bytes)), kept)
            }
            Err(_) => return (StatusCode::BAD_REQUEST, "the request body could not be read").into_response(),
        }
    } else {
        (request, axum::body::Bytes::new())
    };
    let response = next.run(request).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let text = String::from_utf8_lossy(&body[..body.len().min(AUDIT_BODY)]).into_owned();
    let entry = cairn_meta::identity::AuditEntry {
        time_ms: cairn_meta::now_ms(),
        user,
        address,
        method,
        object: object_of(&path, &json),
        path,
        status: i64::from(response.status().as_u16()),
        request: text,
    };
    // The write happened, so its answer stands; a failure to record it is said in a warning
    // header rather than hidden.
    let meta = audit.meta.clone();
    let failure = match tokio::task::spawn_blocking(move || meta.append_audit(&entry)).await {
        Ok(Ok(())) => return response,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    let mut response = response;
    let warning = format!("199 cairn \"not recorded in the audit log: {}\"", failure.replace('"', "'"));
    if let Ok(value) = HeaderValue::from_str(&warning) {
        response.headers_mut().insert(header::WARNING, value);
    }
    response
}

/// `router` with every request but `GET /health` authenticated against `meta`'s tokens.
pub fn authenticated(router: axum::Router, meta: Arc<Store>) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(meta, require_token))
}

fn unauthenticated(message: &str) -> Response {
    let mut response =
        (StatusCode::UNAUTHORIZED, axum::Json(json!({"error_code": "UNAUTHENTICATED", "message": message})))
            .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"cairn\", Basic realm=\"cairn\""),
    );
    response
}

/// The token a request carries, and the user name it claims (Basic only).
fn credentials(value: &str) -> Result<(Option<String>, String), &'static str> {
    if let Some(token) = value.strip_prefix("Bearer ") {
        return Ok((None, token.trim().to_owned()));
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or("the Basic credentials are not base64 of `user:token`")?;
        let (user, token) = decoded.split_once(':').ok_or("the Basic credentials are not `user:token`")?;
        return Ok((Some(user.to_owned()), token.to_owned()));
    }
    Err("the Authorization header is neither `Bearer TOKEN` nor `Basic` credentials")
}

async fn require_token(State(meta): State<Arc<Store>>, mut request: Request, next: Next) -> Response {
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return unauthenticated(
            "this server requires an API token: set MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD=TOKEN); an admin creates one with `cairn token create`",
        );
    };
    let (user, token) = match credentials(value) {
        Ok(found) => found,
        Err(why) => return unauthenticated(why),
    };
    let checked = tokio::task::spawn_blocking(move || meta.authenticate(&token, cairn_meta::now_ms())).await;
    let identity: Identity = match checked {
        Ok(Ok(Some(identity))) if user.as_deref().is_none_or(|u| u == identity.user) => identity,
        Ok(Ok(Some(_))) => return unauthenticated("the token does not belong to the user name given"),
        Ok(Ok(None)) => return unauthenticated("the token is unknown, expired or revoked"),
        Ok(Err(e)) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error_code": "INTERNAL_ERROR", "message": e.to_string()})),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(json!({"error_code": "INTERNAL_ERROR", "message": e.to_string()})),
            )
                .into_response();
        }
    };
    request.extensions_mut().insert(identity);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_basic_credentials() {
        assert_eq!(credentials("Bearer cairn_x"), Ok((None, "cairn_x".to_owned())));
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:cairn_y");
        assert_eq!(
            credentials(&format!("Basic {basic}")),
            Ok((Some("alice".to_owned()), "cairn_y".to_owned()))
        );
        assert!(credentials("Basic !!!").is_err());
        assert!(credentials("Token abc").is_err());
    }
}
