//! Extractors whose rejections are JSON in FastAPI's shape: axum's default
//! plain-text rejections never reach the client.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bonde_pressure_core::{ActivistInput, CallId, StartCallRequest, TargetInput};
use serde_json::{Map, Value};

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

/// Parses `POST /v1/phone/call`'s JSON body.
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
    let mut errors = Vec::new();
    let Some(root) = value.as_object() else {
        return Err(AppError::Validation(vec![ValidationItem::body(
            &[],
            "Input should be a valid dictionary or object to extract fields from",
            "model_attributes_type",
        )]));
    };
    let widget_id = int_field(&mut errors, root, &["widget_id"]);
    let activist = object_field(&mut errors, root, &["activist"]);
    let target = object_field(&mut errors, root, &["target"]);
    let activist = activist.map(|a| {
        let name = string_field(&mut errors, a, &["activist", "name"]).unwrap_or_default();
        let first_name = optional_string_field(&mut errors, a, &["activist", "first_name"]);
        let last_name = optional_string_field(&mut errors, a, &["activist", "last_name"]);
        let email = string_field(&mut errors, a, &["activist", "email"]).unwrap_or_default();
        let phone = string_field(&mut errors, a, &["activist", "phone"]).unwrap_or_default();
        let mut input = ActivistInput::new(name, email, phone);
        input.first_name = first_name;
        input.last_name = last_name;
        input
    });
    let target = target.map(|t| {
        TargetInput::new(
            string_field(&mut errors, t, &["target", "name"]).unwrap_or_default(),
            string_field(&mut errors, t, &["target", "phone"]).unwrap_or_default(),
        )
    });
    match (widget_id, activist, target) {
        (Some(widget_id), Some(activist), Some(target)) if errors.is_empty() => {
            Ok(StartCallRequest::new(widget_id, activist, target))
        }
        _ => Err(AppError::Validation(errors)),
    }
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

fn last<'a>(loc: &[&'a str]) -> &'a str {
    loc.last().copied().unwrap_or_default()
}

fn object_field<'a>(
    errors: &mut Vec<ValidationItem>,
    obj: &'a Map<String, Value>,
    loc: &[&str],
) -> Option<&'a Map<String, Value>> {
    match obj.get(last(loc)) {
        None => {
            errors.push(ValidationItem::body(loc, "Field required", "missing"));
            None
        }
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            errors.push(ValidationItem::body(
                loc,
                "Input should be a valid dictionary or object to extract fields from",
                "model_attributes_type",
            ));
            None
        }
    }
}

fn string_field(
    errors: &mut Vec<ValidationItem>,
    obj: &Map<String, Value>,
    loc: &[&str],
) -> Option<String> {
    match obj.get(last(loc)) {
        None => {
            errors.push(ValidationItem::body(loc, "Field required", "missing"));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(ValidationItem::body(
                loc,
                "Input should be a valid string",
                "string_type",
            ));
            None
        }
    }
}

fn optional_string_field(
    errors: &mut Vec<ValidationItem>,
    obj: &Map<String, Value>,
    loc: &[&str],
) -> Option<String> {
    match obj.get(last(loc)) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(ValidationItem::body(
                loc,
                "Input should be a valid string",
                "string_type",
            ));
            None
        }
    }
}

fn int_field(
    errors: &mut Vec<ValidationItem>,
    obj: &Map<String, Value>,
    loc: &[&str],
) -> Option<i64> {
    let bad = |errors: &mut Vec<ValidationItem>, msg: &str, kind: &str| {
        errors.push(ValidationItem::body(loc, msg, kind));
        None
    };
    match obj.get(last(loc)) {
        None => bad(errors, "Field required", "missing"),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Some(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            (None, Some(f)) if f.fract() != 0.0 => bad(
                errors,
                "Input should be a valid integer, got a number with a fractional part",
                "int_from_float",
            ),
            _ => bad(errors, "Input should be a valid integer", "int_type"),
        },
        // pydantic's lax mode reads "12" as 12.
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Some(i),
            Err(_) => bad(
                errors,
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
            ),
        },
        Some(_) => bad(errors, "Input should be a valid integer", "int_type"),
    }
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
