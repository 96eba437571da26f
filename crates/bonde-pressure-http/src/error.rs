//! Error answers: FastAPI-shaped bodies (`{"detail": …}`), so the campaign
//! page reads them as it read upstream's.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// One validation error, FastAPI's shape: `loc` starts with `body`, `path` or `query`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ValidationItem {
    /// Where: `["body", "activist", "phone"]` (names, or indexes in lists).
    #[schema(schema_with = loc_schema)]
    pub loc: Vec<serde_json::Value>,
    /// What is wrong.
    pub msg: String,
    /// Machine-readable kind (`missing`, `json_invalid`, `value_error.phone`...).
    #[serde(rename = "type")]
    pub kind: String,
}

/// `loc`'s schema, as FastAPI's: a list of strings or integers.
fn loc_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(ObjectBuilder::new().schema_type(Type::Integer)),
        )
        .build()
}

impl ValidationItem {
    /// An error at `loc` (strings become path segments).
    pub fn new(
        loc: Vec<serde_json::Value>,
        msg: impl Into<String>,
        kind: impl Into<String>,
    ) -> Self {
        Self {
            loc,
            msg: msg.into(),
            kind: kind.into(),
        }
    }

    /// An error in the body at these field names.
    pub fn body(fields: &[&str], msg: impl Into<String>, kind: impl Into<String>) -> Self {
        let mut loc = vec![serde_json::Value::from("body")];
        loc.extend(fields.iter().map(|f| serde_json::Value::from(*f)));
        Self::new(loc, msg, kind)
    }
}

/// `422` body: `{"detail": [ValidationItem…]}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationBody {
    /// The errors.
    pub detail: Vec<ValidationItem>,
}

/// Other error bodies: `{"detail": "message"}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageBody {
    /// The message.
    pub detail: String,
}

/// Everything a handler can answer with besides success. 5xx answers log
/// their cause and return a generic body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// 422 with field errors.
    #[error("validation failed")]
    Validation(Vec<ValidationItem>),
    /// A 4xx with a message (`404 Call not found.`).
    #[error("{status}: {message}")]
    Client {
        /// The status.
        status: StatusCode,
        /// The message.
        message: String,
    },
    /// 429: slow down.
    #[error("rate limited ({scope})")]
    RateLimited {
        /// Which limit (`ip`, `activist`, `target`).
        scope: &'static str,
        /// When to try again.
        retry_after: Duration,
    },
    /// A dependency (telephony, campaign directory) failed: 502/503 with a generic message.
    #[error("upstream failure: {detail}")]
    Upstream {
        /// 502 or 503.
        status: StatusCode,
        /// Shown to the client.
        public: &'static str,
        /// Logged only: build it with the cause's whole chain
        /// ([`bonde_pressure_core::error_chain`]), not only its message.
        detail: String,
        /// Retry-After, when known.
        retry_after: Option<Duration>,
    },
    /// One call's stored record cannot be decoded (a damaged row): 500 with
    /// a body naming that call, not the generic one. Retrying does not help
    /// (no `Retry-After`); other calls are served as usual.
    #[error("call {call_id} unreadable: {reason}")]
    Unreadable {
        /// The call.
        call_id: bonde_pressure_core::CallId,
        /// Logged only (column and kind of damage).
        reason: String,
    },
    /// Anything else: 500, logged, generic body.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// A 4xx with a message.
    pub fn client(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            message: message.into(),
        }
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, message)
    }

    /// 500, with a cause for the logs: an error (logged with its chain of
    /// sources, [`bonde_pressure_core::error_chain`]) or a message.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(bonde_pressure_core::error_chain(&*cause.into()).to_string())
    }

    /// A store failure while reading call `call_id`: its damaged record is
    /// [`AppError::Unreadable`], the store unavailable a 503 with
    /// `Retry-After` ([`crate::deadline::store_error`]), anything else
    /// [`AppError::Internal`].
    pub fn reading_call(
        call_id: bonde_pressure_core::CallId,
        e: bonde_pressure_core::StoreError,
    ) -> Self {
        match e {
            bonde_pressure_core::StoreError::Unreadable(u) => Self::Unreadable {
                call_id,
                reason: u.reason,
            },
            other => crate::deadline::store_error(other),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Client { status, .. } => *status,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Upstream { status, .. } => *status,
            AppError::Unreadable { .. } | AppError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

fn retry_after_header(d: Duration) -> HeaderValue {
    // Whole seconds, rounded up, at least 1.
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            AppError::Validation(detail) => {
                (status, axum::Json(ValidationBody { detail })).into_response()
            }
            AppError::Client { message, .. } => {
                (status, axum::Json(MessageBody { detail: message })).into_response()
            }
            AppError::RateLimited { retry_after, .. } => {
                let mut r = (
                    status,
                    axum::Json(MessageBody {
                        detail: "Too many requests. Try again later.".into(),
                    }),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, retry_after_header(retry_after));
                r
            }
            AppError::Upstream {
                public,
                detail,
                retry_after,
                ..
            } => {
                tracing::warn!(status = status.as_u16(), %detail, "upstream failure");
                let mut r = (
                    status,
                    axum::Json(MessageBody {
                        detail: public.into(),
                    }),
                )
                    .into_response();
                if let Some(d) = retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, retry_after_header(d));
                }
                r
            }
            AppError::Unreadable { call_id, reason } => {
                // Core logged it (error) the first time it met this call.
                tracing::debug!(%call_id, %reason, "stored call cannot be read");
                (
                    status,
                    axum::Json(MessageBody {
                        detail: format!(
                            "Call {call_id} cannot be read: its stored record is damaged."
                        ),
                    }),
                )
                    .into_response()
            }
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    status,
                    axum::Json(MessageBody {
                        detail: "Internal server error.".into(),
                    }),
                )
                    .into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_header(Duration::from_millis(1)), "1");
        assert_eq!(retry_after_header(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_header(Duration::from_secs(3)), "3");
        assert_eq!(retry_after_header(Duration::ZERO), "1");
    }

    #[test]
    fn internal_errors_log_the_chain_of_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading call 7 failed")]
        struct Outer(#[source] std::io::Error);
        let e = AppError::internal(Outer(std::io::Error::other("connection reset")));
        let AppError::Internal(ref logged) = e else {
            panic!("{e:?}")
        };
        assert_eq!(logged, "reading call 7 failed: connection reset");
        assert_eq!(
            AppError::internal("a message").to_string(),
            "internal error: a message"
        );
        let e = crate::deadline::store_unavailable(Outer(std::io::Error::other("pool timed out")));
        let AppError::Upstream { ref detail, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            detail,
            "store unavailable: reading call 7 failed: pool timed out"
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let r = AppError::internal("db password is hunter2").into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
