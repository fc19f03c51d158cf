//! Authentication for a team server: every request but `GET /health` carries an API token,
//! as the `mlflow` client sends one — `MLFLOW_TRACKING_TOKEN` (`Authorization: Bearer …`), or
//! `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` with the token as the password
//! (`Authorization: Basic …`, where the user name must be the token's user). A missing,
//! malformed, unknown, expired or revoked token is a 401 that says which, in the error shape
//! the `mlflow` client prints, and the request goes no further. The identity is attached to
//! the request for what runs after.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use cairn_meta::Store;
use cairn_meta::identity::Identity;
use serde_json::json;

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
