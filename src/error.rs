//! Errors of the HTTP layer, each turned into a response the client can use:
//! HTML fragments that htmx can swap in, or JSON for `/api`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::routes::Unresolved;
use crate::views;
use crate::widget::params::ParamError;

/// Errors of the HTML routes (pages and widget fragments).
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No widget with that id.
    #[error("There is no such widget.")]
    UnknownWidget,
    /// Parameters the widget does not take.
    #[error("Bad widget parameters: {0}.")]
    BadParams(ParamError),
    /// A fragment was asked for without a session: htmx follows `HX-Redirect`.
    #[error("Please sign in.")]
    SignedOut,
    /// The session could not be written.
    #[error("Your session could not be saved; please try again.")]
    Session,
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::UnknownWidget => StatusCode::NOT_FOUND,
            PageError::BadParams(_) => StatusCode::BAD_REQUEST,
            PageError::SignedOut => StatusCode::UNAUTHORIZED,
            PageError::Session => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if matches!(self, PageError::SignedOut) {
            resp.insert_header(("HX-Redirect", "/login"));
        }
        resp.insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("text/html; charset=utf-8")
            .body(views::error_fragment(&self.to_string()).into_string())
    }
}

impl From<Unresolved> for PageError {
    fn from(e: Unresolved) -> Self {
        match e {
            Unresolved::UnknownWidget => PageError::UnknownWidget,
            Unresolved::Params(p) => PageError::BadParams(p),
        }
    }
}

impl From<Unresolved> for ApiError {
    fn from(e: Unresolved) -> Self {
        match e {
            Unresolved::UnknownWidget => ApiError::UnknownWidget,
            Unresolved::Params(p) => ApiError::BadParams(p),
        }
    }
}

/// Errors of the JSON routes.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No widget with that id.
    #[error("unknown widget")]
    UnknownWidget,
    /// Parameters the widget does not take.
    #[error("bad parameters: {0}")]
    BadParams(ParamError),
    /// No session.
    #[error("not signed in")]
    SignedOut,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownWidget => StatusCode::NOT_FOUND,
            ApiError::BadParams(_) => StatusCode::BAD_REQUEST,
            ApiError::SignedOut => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}

/// Errors of the invalidation webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No `--invalidation-secret`: the webhook is off.
    #[error("the invalidation webhook is disabled (no INVALIDATION_SECRET)")]
    Disabled,
    /// Missing signature headers.
    #[error("missing X-Percache-Timestamp or X-Percache-Signature")]
    Unsigned,
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// The timestamp is more than 300 s away from now.
    #[error("timestamp too old or too far in the future")]
    Expired,
    /// A well-signed but unusable body.
    #[error("bad request body: {0}")]
    BadBody(String),
    /// The store could not delete the entries.
    #[error("store unavailable: {0}")]
    Store(String),
}

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::Disabled => StatusCode::NOT_FOUND,
            WebhookError::Unsigned | WebhookError::BadSignature | WebhookError::Expired => {
                StatusCode::UNAUTHORIZED
            }
            WebhookError::BadBody(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WebhookError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "error": self.to_string() }))
    }
}
