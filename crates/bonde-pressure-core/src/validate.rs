//! Pure input validation: a request body, already decoded from JSON, checked
//! field by field into the service's input types.
//!
//! Every problem is reported at once, not only the first: a missing field,
//! a value of the wrong JSON type, an integer with a fractional part. Each
//! [`FieldError`] says where (`loc`, relative to the body: `["activist",
//! "phone"]`; empty for the body itself), what (`msg`) and of which kind
//! (`kind`), with pydantic's messages and kinds, so an HTTP adapter that
//! answers like FastAPI only prefixes `"body"` to `loc`.
//!
//! What the values mean (a callable phone number, a valid e-mail, a name's
//! length) is checked by [`PressureService::start`](crate::PressureService::start),
//! which reports its own [`FieldError`]s the same way.
//!
//! ```
//! use bonde_pressure_core::validate;
//! use serde_json::json;
//!
//! let errors = validate::start_request(&json!({"widget_id": "x", "activist": {}})).unwrap_err();
//! let kinds: Vec<&str> = errors.iter().map(|e| e.kind.as_str()).collect();
//! assert_eq!(kinds, ["int_parsing", "missing", "missing", "missing", "missing"]);
//! assert_eq!(errors[0].loc, ["widget_id"]);
//! assert_eq!(errors[1].loc, ["target"]);
//! assert_eq!(errors[4].loc, ["activist", "phone"]);
//! ```

use serde_json::{Map, Value};

use crate::service::{ActivistInput, FieldError, StartCallRequest, TargetInput};

const MISSING: (&str, &str) = ("Field required", "missing");
const NOT_AN_OBJECT: (&str, &str) = (
    "Input should be a valid dictionary or object to extract fields from",
    "model_attributes_type",
);
const NOT_A_STRING: (&str, &str) = ("Input should be a valid string", "string_type");
const NOT_AN_INT: (&str, &str) = ("Input should be a valid integer", "int_type");

/// Checks the body of a start request (`POST /v1/phone/call`'s JSON) and
/// builds the [`StartCallRequest`], or returns every [`FieldError`] found.
///
/// Accepted like pydantic's lax mode: `widget_id` may be an integer, a
/// float without fractional part, or a string holding an integer;
/// `activist.first_name` and `activist.last_name` may be absent or `null`.
/// Unknown fields are ignored.
pub fn start_request(body: &Value) -> Result<StartCallRequest, Vec<FieldError>> {
    let Some(root) = body.as_object() else {
        return Err(vec![error(&[], NOT_AN_OBJECT)]);
    };
    let mut errors = Vec::new();
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
        _ => Err(errors),
    }
}

fn error(loc: &[&str], (msg, kind): (&str, &str)) -> FieldError {
    FieldError::new(loc, msg, kind)
}

fn last<'a>(loc: &[&'a str]) -> &'a str {
    loc.last().copied().unwrap_or_default()
}

fn object_field<'a>(
    errors: &mut Vec<FieldError>,
    obj: &'a Map<String, Value>,
    loc: &[&str],
) -> Option<&'a Map<String, Value>> {
    match obj.get(last(loc)) {
        None => {
            errors.push(error(loc, MISSING));
            None
        }
        Some(Value::Object(m)) => Some(m),
        Some(_) => {
            errors.push(error(loc, NOT_AN_OBJECT));
            None
        }
    }
}

fn string_field(
    errors: &mut Vec<FieldError>,
    obj: &Map<String, Value>,
    loc: &[&str],
) -> Option<String> {
    match obj.get(last(loc)) {
        None => {
            errors.push(error(loc, MISSING));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(error(loc, NOT_A_STRING));
            None
        }
    }
}

fn optional_string_field(
    errors: &mut Vec<FieldError>,
    obj: &Map<String, Value>,
    loc: &[&str],
) -> Option<String> {
    match obj.get(last(loc)) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(error(loc, NOT_A_STRING));
            None
        }
    }
}

fn int_field(errors: &mut Vec<FieldError>, obj: &Map<String, Value>, loc: &[&str]) -> Option<i64> {
    let mut bad = |e: (&str, &str)| {
        errors.push(error(loc, e));
        None
    };
    match obj.get(last(loc)) {
        None => bad(MISSING),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Some(i),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
            (None, Some(f)) if f.fract() != 0.0 => bad((
                "Input should be a valid integer, got a number with a fractional part",
                "int_from_float",
            )),
            _ => bad(NOT_AN_INT),
        },
        // pydantic's lax mode reads "12" as 12.
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Some(i),
            Err(_) => bad((
                "Input should be a valid integer, unable to parse string as an integer",
                "int_parsing",
            )),
        },
        Some(_) => bad(NOT_AN_INT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(body: Value) -> Vec<(String, String, String)> {
        start_request(&body)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.loc.join("."), e.kind, e.msg))
            .collect()
    }

    fn kinds(body: Value) -> Vec<(String, String)> {
        errors(body).into_iter().map(|(l, k, _)| (l, k)).collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn accepts_the_front_end_body() {
        let r = start_request(&json!({
            "widget_id": 1,
            "activist": {"name": "Ana", "first_name": "Ana", "last_name": "Silva",
                         "email": "ana@x.org", "phone": "11 91234-5678", "extra": true},
            "target": {"name": "Demo Target", "phone": "+5561999990000"}
        }))
        .unwrap();
        assert_eq!(r.widget_id, 1);
        assert_eq!(r.activist.name, "Ana");
        assert_eq!(r.activist.email, "ana@x.org");
        assert_eq!(r.activist.phone, "11 91234-5678");
        assert_eq!(r.activist.first_name.as_deref(), Some("Ana"));
        assert_eq!(r.activist.last_name.as_deref(), Some("Silva"));
        assert_eq!(r.target.name, "Demo Target");
        assert_eq!(r.target.phone, "+5561999990000");
    }

    #[test]
    fn lax_integers_and_optional_names() {
        let body = |w: Value| {
            json!({"widget_id": w, "activist": {"name": "A", "email": "e", "phone": "p", "last_name": null},
                   "target": {"name": "T", "phone": "q"}})
        };
        assert_eq!(start_request(&body(json!("12"))).unwrap().widget_id, 12);
        assert_eq!(start_request(&body(json!(" 7 "))).unwrap().widget_id, 7);
        assert_eq!(start_request(&body(json!(3.0))).unwrap().widget_id, 3);
        let r = start_request(&body(json!(1))).unwrap();
        assert_eq!((r.activist.first_name, r.activist.last_name), (None, None));
        assert_eq!(
            kinds(body(json!(1.5))),
            pairs(&[("widget_id", "int_from_float")])
        );
        assert_eq!(
            kinds(body(json!(true))),
            pairs(&[("widget_id", "int_type")])
        );
        assert_eq!(
            kinds(body(json!(1e300))),
            pairs(&[("widget_id", "int_type")])
        );
    }

    #[test]
    fn every_missing_field_is_reported_together() {
        assert_eq!(
            errors(json!({"activist": {"name": "Ana"}, "target": {}})),
            [
                ("widget_id", "missing"),
                ("activist.email", "missing"),
                ("activist.phone", "missing"),
                ("target.name", "missing"),
                ("target.phone", "missing"),
            ]
            .map(|(l, k)| (l.to_string(), k.to_string(), "Field required".to_string()))
        );
        assert_eq!(
            kinds(json!({})),
            pairs(&[
                ("widget_id", "missing"),
                ("activist", "missing"),
                ("target", "missing")
            ])
        );
    }

    #[test]
    fn every_wrong_type_is_reported_together() {
        let e = errors(json!({
            "widget_id": "abc",
            "activist": {"name": 1, "first_name": 2, "last_name": [], "email": null, "phone": "1"},
            "target": "x"
        }));
        assert_eq!(
            e.iter()
                .map(|(l, k, _)| (l.clone(), k.clone()))
                .collect::<Vec<_>>(),
            pairs(&[
                ("widget_id", "int_parsing"),
                ("target", "model_attributes_type"),
                ("activist.name", "string_type"),
                ("activist.first_name", "string_type"),
                ("activist.last_name", "string_type"),
                ("activist.email", "string_type"),
            ])
        );
        assert_eq!(
            e[0].2,
            "Input should be a valid integer, unable to parse string as an integer"
        );
        assert_eq!(e[2].2, "Input should be a valid string");
        assert_eq!(
            e[1].2,
            "Input should be a valid dictionary or object to extract fields from"
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_one_error_at_the_root() {
        for body in [json!([1]), json!("x"), json!(1), json!(null)] {
            let e = start_request(&body).unwrap_err();
            assert_eq!(e.len(), 1, "{body}");
            assert!(e[0].loc.is_empty());
            assert_eq!(e[0].kind, "model_attributes_type");
        }
    }
}
