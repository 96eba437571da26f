//! Records the activist's action in BONDE through its GraphQL API:
//! `create_widget_action(activist, widget_id, input: {custom_fields: {call}})`.

use std::time::Duration;

use async_trait::async_trait;
use bonde_pressure_core::ActionRecorder;
use bonde_pressure_core::ports::{RecorderError, WidgetAction};
use serde_json::{Value, json};

use crate::config::Secret;

/// The mutation (BONDE's `create_widget_action` Hasura action).
pub const CREATE_WIDGET_ACTION: &str = "mutation WidgetActionCreate($activist: ActivistInput!, $widget_id: Int!, $input: WidgetActionInput!) { create_widget_action(activist: $activist, widget_id: $widget_id, input: $input) { data } }";

/// An [`ActionRecorder`] over BONDE's GraphQL API. Transport failures and
/// HTTP 5xx/429 are retried with exponential backoff, a bounded number of
/// times (the caller waits: `POST /v1/phone/call` answers after it); GraphQL
/// errors are not retried.
#[derive(Debug, Clone)]
pub struct GraphqlActionRecorder {
    http: reqwest::Client,
    url: String,
    token: Secret,
    attempts: u32,
    backoff: Duration,
}

impl GraphqlActionRecorder {
    /// A recorder posting to `url`: 3 attempts, 200 ms then 400 ms apart, 3 s per attempt.
    pub fn new(url: impl Into<String>, token: Secret) -> Self {
        Self::with_retry(url, token, 3, Duration::from_millis(200))
    }

    /// A recorder with its own retry policy.
    pub fn with_retry(
        url: impl Into<String>,
        token: Secret,
        attempts: u32,
        backoff: Duration,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: url.into(),
            token,
            attempts: attempts.max(1),
            backoff,
        }
    }

    /// The GraphQL variables for an action.
    pub fn variables(action: &WidgetAction) -> Value {
        let a = &action.activist;
        json!({
            "activist": {
                "name": a.name.as_str(),
                "first_name": a.first_name.as_ref().map(|n| n.as_str()),
                "last_name": a.last_name.as_ref().map(|n| n.as_str()),
                "email": a.email.as_str(),
                "phone": a.phone.as_e164(),
            },
            "widget_id": action.widget_id.get(),
            "input": {"custom_fields": {"call": action.call_id.to_string()}},
        })
    }

    /// One attempt; on failure, whether to retry and the cause.
    async fn attempt(&self, body: &Value) -> Result<(), (bool, RecorderError)> {
        let resp = self
            .http
            .post(&self.url)
            .header("x-hasura-admin-secret", self.token.expose())
            .json(body)
            .send()
            .await
            .map_err(|e| (true, RecorderError::failed(e)))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err((true, RecorderError::failed(format!("HTTP {status}"))));
        }
        if !status.is_success() {
            return Err((false, RecorderError::failed(format!("HTTP {status}"))));
        }
        let doc: Value = resp
            .json()
            .await
            .map_err(|e| (false, RecorderError::failed(e)))?;
        if let Some(errors) = doc.get("errors").filter(|e| !e.is_null()) {
            let msg = errors
                .get(0)
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err((
                false,
                RecorderError::failed(format!("GraphQL error: {msg}")),
            ));
        }
        Ok(())
    }
}

#[async_trait]
impl ActionRecorder for GraphqlActionRecorder {
    async fn record(&self, action: &WidgetAction) -> Result<(), RecorderError> {
        let body = json!({"query": CREATE_WIDGET_ACTION, "variables": Self::variables(action)});
        let mut last = RecorderError::failed("no attempt made");
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
            match self.attempt(&body).await {
                Ok(()) => return Ok(()),
                Err((retry, error)) => {
                    tracing::warn!(call_id = %action.call_id, attempt = attempt + 1, %error, "create_widget_action failed");
                    last = error;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bonde_pressure_core::domain::{Email, PersonName};
    use bonde_pressure_core::{Activist, CallId, PhoneNumber, Region, WidgetId};
    use wiremock::matchers::{body_partial_json, header, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn action() -> WidgetAction {
        WidgetAction::new(
            WidgetId::new(3).unwrap(),
            CallId::new(),
            Activist::new(
                PersonName::parse("Ana Silva").unwrap(),
                Email::parse("ana@nossas.org").unwrap(),
                PhoneNumber::parse("11 91234-5678", Region::BRAZIL).unwrap(),
            )
            .with_first_name(PersonName::parse("Ana").unwrap()),
        )
    }

    #[tokio::test]
    async fn sends_the_mutation_with_the_call_id() {
        let server = MockServer::start().await;
        let a = action();
        Mock::given(method("POST"))
            .and(header("x-hasura-admin-secret", "tok"))
            .and(body_partial_json(json!({"variables": {
                "widget_id": 3,
                "activist": {"email": "ana@nossas.org", "phone": "+5511912345678", "first_name": "Ana"},
                "input": {"custom_fields": {"call": a.call_id.to_string()}}
            }})))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"data": {"create_widget_action": {"data": {}}}})),
            )
            .expect(1)
            .mount(&server)
            .await;
        GraphqlActionRecorder::new(server.uri(), Secret::new("tok"))
            .record(&a)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn retries_server_errors_a_bounded_number_of_times() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(502))
            .expect(3)
            .mount(&server)
            .await;
        let r = GraphqlActionRecorder::with_retry(
            server.uri(),
            Secret::new("t"),
            3,
            Duration::from_millis(1),
        );
        let err = r.record(&action()).await.unwrap_err();
        assert!(err.to_string().contains("502"));
    }

    #[tokio::test]
    async fn graphql_errors_are_not_retried() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"errors": [{"message": "nope"}]})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let r = GraphqlActionRecorder::with_retry(
            server.uri(),
            Secret::new("t"),
            3,
            Duration::from_millis(1),
        );
        assert!(
            r.record(&action())
                .await
                .unwrap_err()
                .to_string()
                .contains("nope")
        );
    }
}
