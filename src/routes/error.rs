//! Errors of the HTTP layer, each turned into a response the client can use:
//! HTML fragments that htmx can swap in, or JSON for `/api`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use super::Unresolved;
use crate::cache::directives::DirectiveError;
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
    /// A malformed query (the message says what was expected).
    #[error("Bad request: {0}.")]
    BadRequest(String),
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        match self {
            PageError::UnknownWidget => StatusCode::NOT_FOUND,
            PageError::BadParams(_) | PageError::BadRequest(_) => StatusCode::BAD_REQUEST,
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
    /// A `Cache-Control` directive with a bad value.
    #[error("{0}")]
    BadDirective(#[from] DirectiveError),
    /// No session.
    #[error("not signed in")]
    SignedOut,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownWidget => StatusCode::NOT_FOUND,
            ApiError::BadParams(_) | ApiError::BadDirective(_) => StatusCode::BAD_REQUEST,
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
    /// This signed request was already carried out (a replay).
    #[error("this signed request was already accepted once (replay)")]
    Replayed,
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
            WebhookError::Replayed => StatusCode::CONFLICT,
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

/// Why `POST /login` refused an attempt before (or instead of) looking at the
/// username. Each answer is the sign-in form again, with the message.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Too many sign-ins from this client address (`--login-rate`).
    #[error("Too many sign-in attempts from your address. Please try again in {retry_after_secs} s.")]
    TooMany {
        /// Seconds until the next attempt is allowed (`Retry-After`).
        retry_after_secs: u64,
        /// What was typed, to fill the form in again.
        username: String,
    },
    /// Not `application/x-www-form-urlencoded` in UTF-8.
    #[error("The sign-in form must be sent as application/x-www-form-urlencoded (UTF-8).")]
    ContentType,
    /// The body is larger than a sign-in form can be.
    #[error("The sign-in form is too large.")]
    TooLarge,
    /// A name or value that is not UTF-8 once percent-decoded.
    #[error("The username is not valid text (UTF-8). Please type it again.")]
    NotUtf8,
    /// A form that cannot be read (e.g. `username` twice).
    #[error("The sign-in form could not be read: {0}.")]
    Malformed(String),
}

impl ResponseError for SignInError {
    fn status_code(&self) -> StatusCode {
        match self {
            SignInError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            SignInError::ContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            SignInError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            SignInError::NotUtf8 => StatusCode::UNPROCESSABLE_ENTITY,
            SignInError::Malformed(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        let mut value = "";
        if let SignInError::TooMany {
            retry_after_secs,
            username,
        } = self
        {
            resp.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            value = username;
        }
        resp.insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("text/html; charset=utf-8")
            .body(views::login_page(Some(&self.to_string()), value).into_string())
    }
}
