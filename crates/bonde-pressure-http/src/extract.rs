//! Extractors whose rejections are JSON in FastAPI's shape: axum's default
//! plain-text rejections never reach the client.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bonde_pressure_core::{CallId, FieldError, StartCallRequest};
use serde_json::Value;

use crate::error::{AppError, ValidationItem};

/// The body of `POST /v1/phone/call`, checked field by field like pydantic
/// would: every missing or mistyped field is reported at once.
#[derive(Debug, Clone)]
pub struct StartCallBody(pub StartCallRequest);

/// A request body as bytes; a body too large is a JSON 413, an unreadable one a JSON 400.
#[derive(Debug, Clone)]
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = AppError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(body_bytes_error)
    }
}

pub(crate) fn body_bytes_error(e: BytesRejection) -> AppError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::client(status, "Request body too large.")
    } else {
        AppError::client(StatusCode::BAD_REQUEST, "Could not read the request body.")
    }
}

impl<S: Send + Sync> FromRequest<S> for StartCallBody {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_bytes_error)?;
        parse_start_call(&bytes).map(StartCallBody)
    }
}

/// Parses `POST /v1/phone/call`'s JSON body: decoding is the adapter's
/// (an empty body or a JSON syntax error answers as FastAPI does), the
/// fields are checked by core's [`bonde_pressure_core::validate::start_request`],
/// every field error at once.
pub fn parse_start_call(bytes: &[u8]) -> Result<StartCallRequest, AppError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(AppError::Validation(vec![ValidationItem::body(
            &[],
            "Field required",
            "missing",
        )]));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        // FastAPI: loc ["body", <character offset>], "JSON decode error".
        let offset = byte_offset(bytes, e.line(), e.column());
        AppError::Validation(vec![ValidationItem::new(
            vec![Value::from("body"), Value::from(offset)],
            "JSON decode error",
            "json_invalid",
        )])
    })?;
    bonde_pressure_core::validate::start_request(&value).map_err(body_errors)
}

/// Core's field errors (`loc` relative to the body) as FastAPI's 422:
/// each `loc` prefixed with `"body"`.
pub(crate) fn body_errors(fields: Vec<FieldError>) -> AppError {
    AppError::Validation(
        fields
            .into_iter()
            .map(|f| {
                let mut loc = vec![Value::from("body")];
                loc.extend(f.loc.into_iter().map(Value::from));
                ValidationItem::new(loc, f.msg, f.kind)
            })
            .collect(),
    )
}

/// 0-based character position of serde_json's (1-based line, column).
fn byte_offset(bytes: &[u8], line: usize, column: usize) -> usize {
    let text = String::from_utf8_lossy(bytes);
    let mut offset = 0;
    for (i, l) in text.split('\n').enumerate() {
        if i + 1 == line {
            return offset + column.saturating_sub(1).min(l.chars().count());
        }
        offset += l.chars().count() + 1;
    }
    offset.saturating_sub(1)
}

/// A `{call_id}` path segment parsed as a [`CallId`]; a malformed one is a
/// 422 at `["path", "call_id"]`.
#[derive(Debug, Clone, Copy)]
pub struct CallIdPath(pub CallId);

impl<S: Send + Sync> FromRequestParts<S> for CallIdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| AppError::not_found("Not Found"))?;
        raw.parse::<CallId>().map(CallIdPath).map_err(|_| {
            AppError::Validation(vec![ValidationItem::new(
                vec![Value::from("path"), Value::from("call_id")],
                "Input should be a valid UUID",
                "uuid_parsing",
            )])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(body: &str) -> Vec<ValidationItem> {
        match parse_start_call(body.as_bytes()) {
            Err(AppError::Validation(v)) => v,
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn accepts_the_front_end_body() {
        let r = parse_start_call(
            br#"{"widget_id": 1, "activist": {"name": "Ana", "first_name": "Ana", "last_name": "Silva",
                "email": "ana@x.org", "phone": "11 91234-5678"}, "target": {"name": "Demo Target", "phone": "+5561999990000"}}"#,
        )
        .unwrap();
        assert_eq!(r.widget_id, 1);
        assert_eq!(r.activist.phone, "11 91234-5678");
        assert_eq!(r.activist.last_name.as_deref(), Some("Silva"));
    }

    #[test]
    fn reports_every_missing_field() {
        let e = errors(r#"{"activist": {"name": "Ana"}, "target": {}}"#);
        let locs: Vec<String> = e
            .iter()
            .map(|i| serde_json::to_string(&i.loc).unwrap())
            .collect();
        for want in [
            r#"["body","widget_id"]"#,
            r#"["body","activist","email"]"#,
            r#"["body","activist","phone"]"#,
            r#"["body","target","name"]"#,
            r#"["body","target","phone"]"#,
        ] {
            assert!(locs.contains(&want.to_string()), "{want} in {locs:?}");
        }
        assert!(
            e.iter()
                .all(|i| i.kind == "missing" && i.msg == "Field required")
        );
    }

    #[test]
    fn syntax_errors_and_wrong_types() {
        let e = errors(r#"{"widget_id": 1,"#);
        assert_eq!(e[0].kind, "json_invalid");
        assert_eq!(e[0].loc[0], "body");
        assert!(e[0].loc[1].is_u64());
        assert_eq!(errors("")[0].kind, "missing");
        assert_eq!(errors("[1]")[0].kind, "model_attributes_type");
        let e = errors(
            r#"{"widget_id": "abc", "activist": {"name": 1, "email": "a@b.c", "phone": "1"}, "target": "x"}"#,
        );
        let kinds: Vec<&str> = e.iter().map(|i| i.kind.as_str()).collect();
        assert!(kinds.contains(&"int_parsing"), "{kinds:?}");
        assert!(kinds.contains(&"string_type"), "{kinds:?}");
        assert!(kinds.contains(&"model_attributes_type"), "{kinds:?}");
        assert_eq!(errors(r#"{"widget_id": 1.5}"#)[0].kind, "int_from_float");
    }

    #[test]
    fn offsets_count_characters() {
        assert_eq!(byte_offset(b"{\n  x", 2, 3), 4);
        assert_eq!(byte_offset(b"{", 1, 2), 1);
    }
}
