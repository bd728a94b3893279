//! What a request can fail with. API routes answer JSON (`{"error": "..."}`); pages wrap the
//! same errors in [`PageError`], which renders an HTML page.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("authentication required")]
    Unauthorized,
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("too many failed logins; try again later")]
    LockedOut,
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A bounded resource (searches, downloads, threads) is taken: try again shortly.
    #[error("busy: {0}")]
    Busy(String),
    /// A service the answer needs (the catalog database) does not answer: try again later.
    #[error("{0}")]
    Unavailable(String),
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::NotFound => StatusCode::NOT_FOUND,
            WebError::Unauthorized => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::LockedOut => StatusCode::TOO_MANY_REQUESTS,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebError::Busy(_) | WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// What the client is told. Internal details go to the log, not to the client.
    pub fn public_message(&self) -> String {
        match self {
            WebError::Internal(detail) => {
                tracing::error!("{detail}");
                "internal error (see the server log)".into()
            }
            WebError::Unavailable(detail) => {
                // The operator hears of it from /healthz and the catalog writer's log.
                tracing::debug!("{detail}");
                "the catalog is unavailable; try again in a few seconds".into()
            }
            e => e.to_string(),
        }
    }
}

impl From<crate::catalog::CatalogError> for WebError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        match e {
            crate::catalog::CatalogError::Unavailable(_) => WebError::Unavailable(e.to_string()),
            e => WebError::Internal(format!("catalog: {e}")),
        }
    }
}

impl From<askama::Error> for WebError {
    fn from(e: askama::Error) -> Self {
        WebError::Internal(format!("template: {e}"))
    }
}

impl From<tokio::task::JoinError> for WebError {
    fn from(e: tokio::task::JoinError) -> Self {
        WebError::Internal(format!("worker task: {e}"))
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.public_message() }).to_string();
        let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
        }
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"logarchive\", charset=\"UTF-8\""),
            );
        }
        r
    }
}

/// An error on an HTML page: a login redirect for anonymous visitors, an error page otherwise.
#[derive(Debug)]
pub struct PageError(pub WebError);

impl<E: Into<WebError>> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if matches!(self.0, WebError::Unauthorized) {
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/login"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
            )
                .into_response();
        }
        let status = self.0.status();
        let page = super::pages::ErrorPage {
            status: status.as_u16(),
            message: self.0.public_message(),
        };
        match askama::Template::render(&page) {
            Ok(html) => (status, axum::response::Html(html)).into_response(),
            Err(_) => (status, page.message).into_response(),
        }
    }
}
