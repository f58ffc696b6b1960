//! Errors as the clients expect them: TEI's `{error, error_type}` on its routes, OpenAI's
//! `{"error": {message, type, param, code}}` on `/v1/embeddings`, with TEI's status codes on
//! both (see docs/server.md for the table).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// TEI's error kinds (serialized by name, as TEI does), plus `PayloadTooLarge` and `Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum ErrorType {
    /// The server cannot serve (the scheduler stopped): 503.
    Unhealthy,
    /// The engine failed on an input (e.g. a non-finite embedding): 424, as TEI's backend errors.
    Backend,
    /// The queue or the request slots are full: 429, retry later.
    Overloaded,
    /// The request is well-formed JSON but invalid (types, unknown fields, limits): 422.
    Validation,
    /// An input could not be tokenized: 422.
    Tokenizer,
    /// No inputs (an empty array): 400.
    Empty,
    /// The body is not valid JSON (or not UTF-8): 400.
    InvalidJson,
    /// The body, or the request's tokens, exceed a capacity it can never fit: 413.
    PayloadTooLarge,
}

impl ErrorType {
    /// The HTTP status of this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorType::Unhealthy => StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::Backend => StatusCode::FAILED_DEPENDENCY,
            ErrorType::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorType::Validation | ErrorType::Tokenizer => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorType::Empty | ErrorType::InvalidJson => StatusCode::BAD_REQUEST,
            ErrorType::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// OpenAI's error `type` string for this kind.
    fn openai_type(self) -> &'static str {
        match self {
            ErrorType::Overloaded => "rate_limit_error",
            ErrorType::Unhealthy | ErrorType::Backend => "server_error",
            _ => "invalid_request_error",
        }
    }
}

/// Which wire shape an error is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Tei,
    OpenAi,
}

/// An error reply.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub kind: ErrorType,
    pub message: String,
    pub flavor: Flavor,
}

impl ApiError {
    pub fn new(kind: ErrorType, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            flavor: Flavor::Tei,
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorType::Validation, message)
    }

    pub fn with_flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

/// TEI's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct TeiErrorBody {
    pub error: String,
    pub error_type: ErrorType,
}

/// OpenAI's error object.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    /// The TEI error type name, e.g. `Validation`.
    pub code: Option<String>,
}

/// OpenAI's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = match self.flavor {
            Flavor::Tei => (
                status,
                axum::Json(TeiErrorBody {
                    error: self.message,
                    error_type: self.kind,
                }),
            )
                .into_response(),
            Flavor::OpenAi => (
                status,
                axum::Json(OpenAiErrorBody {
                    error: OpenAiErrorDetail {
                        message: self.message,
                        kind: self.kind.openai_type().to_owned(),
                        param: None,
                        code: Some(format!("{:?}", self.kind)),
                    },
                }),
            )
                .into_response(),
        };
        if self.kind == ErrorType::Overloaded {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

/// Maps an engine error on user input to a reply.
pub fn from_engine(e: &e5embed::Error) -> ApiError {
    use e5embed::Error as E;
    match e {
        E::EmptyInput => ApiError::new(ErrorType::Empty, e.to_string()),
        E::InvalidInput(_) | E::Limit { .. } => ApiError::validation(e.to_string()),
        E::Tokenizer { .. } => ApiError::new(ErrorType::Tokenizer, e.to_string()),
        _ => ApiError::new(ErrorType::Backend, e.to_string()),
    }
}
