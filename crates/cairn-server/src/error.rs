//! MLflow's error body, `{"error_code": ..., "message": ...}`, with the HTTP status MLflow
//! uses for each code.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    /// A request that names something that does not exist (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { code: "RESOURCE_DOES_NOT_EXIST", message: message.into() }
    }

    /// A request with a missing, malformed or out-of-range value (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError { code: "INVALID_PARAMETER_VALUE", message: message.into() }
    }

    /// Creating something whose name is taken (400).
    pub fn exists(message: impl Into<String>) -> Self {
        ApiError { code: "RESOURCE_ALREADY_EXISTS", message: message.into() }
    }

    /// An upload larger than the server accepts, or past its run's quota (413).
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError { code: "RESOURCE_LIMIT_EXCEEDED", message: message.into() }
    }

    /// The server's own failure (500): the store is unreachable or broken.
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { code: "INTERNAL_ERROR", message: message.into() }
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            "RESOURCE_DOES_NOT_EXIST" | "ENDPOINT_NOT_FOUND" => StatusCode::NOT_FOUND,
            "INVALID_PARAMETER_VALUE" | "RESOURCE_ALREADY_EXISTS" | "BAD_REQUEST" => StatusCode::BAD_REQUEST,
            "RESOURCE_LIMIT_EXCEEDED" => StatusCode::PAYLOAD_TOO_LARGE,
            "PERMISSION_DENIED" => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<cairn_meta::MetaError> for ApiError {
    fn from(e: cairn_meta::MetaError) -> Self {
        use cairn_meta::MetaError as M;
        match &e {
            M::NoRun(_)
            | M::NoExperiment(_)
            | M::NoModelVersion(_)
            | M::NoLoggedModel(_)
            | M::NoUser(_)
            | M::NoToken(_) => ApiError::not_found(e.to_string()),
            M::ExperimentExists(_) | M::UserExists(_) => ApiError::exists(e.to_string()),
            M::BadName(_) => ApiError::invalid(e.to_string()),
            M::Protected { .. } => ApiError { code: "PERMISSION_DENIED", message: e.to_string() },
            M::ParamChanged { .. }
            | M::ModelParamChanged { .. }
            | M::RunNotActive(_)
            | M::ExperimentNotActive(_) => ApiError::invalid(e.to_string()),
            M::Backend { .. } | M::TooNew { .. } | M::BadLocation(_) | M::Corrupt { .. } => {
                ApiError::internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error_code": self.code, "message": self.message });
        (self.status(), axum::Json(body)).into_response()
    }
}
