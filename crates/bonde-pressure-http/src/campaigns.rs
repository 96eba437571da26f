//! Where campaigns (widgets) come from: a local JSON file, or BONDE's
//! GraphQL API (Hasura); plus a small TTL cache in front of either, since
//! the service looks the widget up on every voice webhook.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bonde_pressure_core::ports::{DirectoryError, Widget, WidgetTarget};
use bonde_pressure_core::{CampaignDirectory, CampaignSettings, StaticCampaignDirectory, WidgetId};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Secret;

/// Why a campaigns file could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CampaignsFileError {
    /// The file could not be read.
    #[error("cannot read campaigns file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid campaigns document.
    #[error("invalid campaigns file {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// BONDE's widget kind that runs phone pressure: a widget of any other
/// kind is not a phone-pressure widget ([`Widget::phone_pressure`] is
/// `false`, and starting a call on it is refused with "Widget is not a
/// 'phone' kind.").
pub const PHONE_KIND: &str = "phone";

/// BONDE's rule: only widgets of kind [`PHONE_KIND`] run phone pressure.
fn runs_phone_pressure(kind: &str) -> bool {
    kind == PHONE_KIND
}

/// A widget as a campaigns file lists it (BONDE's shape, with its `kind`).
#[derive(Deserialize)]
struct CampaignEntry {
    id: WidgetId,
    kind: String,
    targets: Vec<WidgetTarget>,
    #[serde(default)]
    settings: CampaignSettings,
}

impl From<CampaignEntry> for Widget {
    fn from(e: CampaignEntry) -> Self {
        Widget::new(e.id, e.targets)
            .with_settings(e.settings)
            .with_phone_pressure(runs_phone_pressure(&e.kind))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CampaignsDocument {
    Wrapped { widgets: Vec<CampaignEntry> },
    List(Vec<CampaignEntry>),
}

/// Parses a campaigns document: `{"widgets": [Widget…]}` or `[Widget…]`,
/// each `{"id": 1, "kind": "phone", "targets": [{"name", "phone"}], "settings": {…}}`
/// (only widgets of kind [`PHONE_KIND`] can start calls).
pub fn parse_campaigns(text: &str) -> Result<StaticCampaignDirectory, serde_json::Error> {
    let doc: CampaignsDocument = serde_json::from_str(text)?;
    let widgets = match doc {
        CampaignsDocument::Wrapped { widgets } | CampaignsDocument::List(widgets) => widgets,
    };
    Ok(StaticCampaignDirectory::new(
        widgets.into_iter().map(Widget::from),
    ))
}

/// Loads a campaigns file (see [`parse_campaigns`]).
pub fn load_campaigns_file(path: &Path) -> Result<StaticCampaignDirectory, CampaignsFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CampaignsFileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_campaigns(&text).map_err(|source| CampaignsFileError::Parse {
        path: shown,
        source,
    })
}

/// The widget query (Hasura).
pub const WIDGET_QUERY: &str =
    "query Widget($id: Int!) { widgets_by_pk(id: $id) { id kind settings } }";

/// A [`CampaignDirectory`] over BONDE's GraphQL API: `widgets_by_pk(id)`,
/// authenticated with `x-hasura-admin-secret`; targets from `settings.targets`;
/// a widget of a `kind` other than [`PHONE_KIND`] is answered as not a
/// phone-pressure widget.
#[derive(Debug, Clone)]
pub struct GraphqlCampaignDirectory {
    http: reqwest::Client,
    url: String,
    token: Secret,
}

impl GraphqlCampaignDirectory {
    /// A directory at `url` (the GraphQL endpoint).
    pub fn new(url: impl Into<String>, token: Secret) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: url.into(),
            token,
        }
    }
}

fn widget_from_json(id: WidgetId, w: &Value) -> Result<Widget, DirectoryError> {
    let kind = w.get("kind").and_then(Value::as_str).unwrap_or_default();
    let settings = w.get("settings").cloned().unwrap_or(Value::Null);
    // `settings` is free JSON (sometimes double-encoded as a string).
    let settings = match settings {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::Null),
        v => v,
    };
    let targets = settings
        .get("targets")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    Some(WidgetTarget::new(
                        t.get("name")?.as_str()?.to_owned(),
                        match t.get("phone")? {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            _ => return None,
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    // Voice settings, when the widget carries ours under `settings.pressure_call`.
    let call_settings = settings
        .get("pressure_call")
        .and_then(|s| serde_json::from_value::<CampaignSettings>(s.clone()).ok())
        .unwrap_or_default();
    Ok(Widget::new(id, targets)
        .with_settings(call_settings)
        .with_phone_pressure(runs_phone_pressure(kind)))
}

#[async_trait]
impl CampaignDirectory for GraphqlCampaignDirectory {
    async fn widget(&self, id: WidgetId) -> Result<Option<Widget>, DirectoryError> {
        let body = json!({"query": WIDGET_QUERY, "variables": {"id": id.get()}});
        let resp = self
            .http
            .post(&self.url)
            .header("x-hasura-admin-secret", self.token.expose())
            .json(&body)
            .send()
            .await
            .map_err(DirectoryError::unavailable)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DirectoryError::unavailable(format!(
                "GraphQL answered HTTP {status}"
            )));
        }
        let doc: Value = resp.json().await.map_err(DirectoryError::unavailable)?;
        if let Some(errors) = doc.get("errors").filter(|e| !e.is_null()) {
            let msg = errors
                .get(0)
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(DirectoryError::unavailable(format!("GraphQL error: {msg}")));
        }
        match doc.pointer("/data/widgets_by_pk") {
            None => Err(DirectoryError::unavailable(
                "GraphQL answer has no data.widgets_by_pk",
            )),
            Some(Value::Null) => Ok(None),
            Some(w) => widget_from_json(id, w).map(Some),
        }
    }
}

/// Caches another directory's answers (found and not found) for `ttl`;
/// errors are not cached.
pub struct CachedDirectory {
    inner: Arc<dyn CampaignDirectory>,
    ttl: Duration,
    cache: Mutex<HashMap<WidgetId, (Instant, Option<Widget>)>>,
}

impl std::fmt::Debug for CachedDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedDirectory")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl CachedDirectory {
    /// Caches `inner` for `ttl`.
    pub fn new(inner: Arc<dyn CampaignDirectory>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl CampaignDirectory for CachedDirectory {
    async fn widget(&self, id: WidgetId) -> Result<Option<Widget>, DirectoryError> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, w)) = cache.get(&id) {
                if at.elapsed() < self.ttl {
                    return Ok(w.clone());
                }
            }
        }
        let w = self.inner.widget(id).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(id, (Instant::now(), w.clone()));
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{body_partial_json, header, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn wid(n: i64) -> WidgetId {
        WidgetId::new(n).unwrap()
    }

    #[tokio::test]
    async fn campaigns_files_parse_both_shapes() {
        let d = parse_campaigns(
            r#"{"widgets": [{"id": 7, "kind": "phone", "targets": [{"name": "X", "phone": "+5561999990001"}]}]}"#,
        )
        .unwrap();
        let w = d.widget(wid(7)).await.unwrap().unwrap();
        assert!(w.phone_pressure);
        assert_eq!(w.targets[0].name, "X");
        assert_eq!(w.settings, CampaignSettings::default());
        let d = parse_campaigns(r#"[{"id": 8, "kind": "form", "targets": []}]"#).unwrap();
        // BONDE's other kinds of widget are known, but not phone pressure.
        assert!(!d.widget(wid(8)).await.unwrap().unwrap().phone_pressure);
        // `kind` is required, as in BONDE.
        assert!(parse_campaigns(r#"[{"id": 9, "targets": []}]"#).is_err());
        assert!(parse_campaigns(r#"{"widgets": [{"id": -1}]}"#).is_err());
        let err = load_campaigns_file(Path::new("/nonexistent/campaigns.json")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/campaigns.json"));
    }

    #[tokio::test]
    async fn the_example_campaigns_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("campaigns.example.json");
        let d = load_campaigns_file(&path).unwrap();
        assert_eq!(d.widgets().len(), 2);
        let w = d.widget(wid(2)).await.unwrap().unwrap();
        assert_eq!(w.settings.target_timeout_secs, 40);
        assert!(w.settings.messages.greeting.starts_with("Olá, {activist}!"));
        // unspecified messages keep their defaults
        assert_eq!(
            w.settings.messages.no_input,
            CampaignSettings::default().messages.no_input
        );
    }

    #[tokio::test]
    async fn graphql_directory_reads_widgets_by_pk() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(header("x-hasura-admin-secret", "tok"))
            .and(body_partial_json(json!({"variables": {"id": 42}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": {"widgets_by_pk": {"id": 42, "kind": "phone", "settings": {
                    "title": "Ligue", "targets": [{"name": "Dep. Fulano", "phone": "+55 61 99999-0000"}, {"bad": 1}]
                }}}
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"variables": {"id": 43}})))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"data": {"widgets_by_pk": null}})),
            )
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"variables": {"id": 45}})))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "data": {"widgets_by_pk": {"id": 45, "kind": "form", "settings": {"targets": []}}}
            })))
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(body_partial_json(json!({"variables": {"id": 44}})))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"errors": [{"message": "access denied"}]})),
            )
            .mount(&server)
            .await;
        let d = GraphqlCampaignDirectory::new(server.uri(), Secret::new("tok"));
        let w = d.widget(wid(42)).await.unwrap().unwrap();
        assert!(w.phone_pressure);
        assert_eq!(
            w.targets,
            vec![WidgetTarget::new("Dep. Fulano", "+55 61 99999-0000")]
        );
        assert!(d.widget(wid(43)).await.unwrap().is_none());
        // A widget of another kind exists, but does not run phone pressure.
        assert!(!d.widget(wid(45)).await.unwrap().unwrap().phone_pressure);
        let err = d.widget(wid(44)).await.unwrap_err();
        assert!(err.to_string().contains("access denied"));
    }

    #[tokio::test]
    async fn graphql_failures_are_unavailable_and_not_cached() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(503))
            .expect(2)
            .mount(&server)
            .await;
        let d = CachedDirectory::new(
            Arc::new(GraphqlCampaignDirectory::new(
                server.uri(),
                Secret::new("t"),
            )),
            Duration::from_secs(60),
        );
        assert!(d.widget(wid(1)).await.is_err());
        assert!(d.widget(wid(1)).await.is_err());
    }

    #[tokio::test]
    async fn cache_answers_within_ttl() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"data": {"widgets_by_pk": {"id": 1, "kind": "phone", "settings": "{\"targets\": []}"}}}),
            ))
            .expect(1)
            .mount(&server)
            .await;
        let d = CachedDirectory::new(
            Arc::new(GraphqlCampaignDirectory::new(
                server.uri(),
                Secret::new("t"),
            )),
            Duration::from_secs(60),
        );
        for _ in 0..3 {
            assert!(d.widget(wid(1)).await.unwrap().unwrap().phone_pressure);
        }
    }
}
