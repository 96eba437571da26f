//! Personal data: retention, erasure on request, and the audit log of
//! unmasked reads (LGPD).
//!
//! - An erased call keeps everything but the activist's personal data (see
//!   [`Call::erase`]): it still loads, its status and statistics are
//!   unchanged. Erasure is marked in the facts ([`crate::CallFacts::erased_at`])
//!   and stores rebuild an erased activist from [`Activist::erased`] without
//!   parsing the placeholders, so an erased row cannot fail to decode.
//! - [`PersonalDataStore`] is the port: the retention pass, erasure of one
//!   person, the audit log. Every store implements it (in-memory here;
//!   PostgreSQL and SQLite in `bonde-pressure-store`).
//! - [`Privacy`] holds the policy: the retention period, the batch size,
//!   what is audited.
//!
//! [`Activist::erased`]: crate::Activist::erased

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use crate::call::Call;
use crate::domain::{CallId, Email, PhoneNumber, Region};
use crate::ports::{Clock, StoreError};
use crate::service::FieldError;

/// Whose data to erase: the activist's phone number or e-mail address.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PersonKey {
    /// Every call placed to this activist number.
    Phone(PhoneNumber),
    /// Every call whose activist gave this e-mail (compared case-insensitively).
    Email(Email),
}

fn field(loc: &[&str], msg: impl ToString, kind: &str) -> FieldError {
    FieldError {
        loc: loc.iter().map(|s| s.to_string()).collect(),
        msg: msg.to_string(),
        kind: kind.to_owned(),
    }
}

impl PersonKey {
    /// Reads an erasure request's key from its query parameters (`phone`,
    /// `email`, in order, repeated names included): exactly one of the two,
    /// once, valid — a number as the campaign form accepts it (read in
    /// `region`) or any E.164 text (`+` and digits of an assigned country
    /// code, as stored: the number policy is not applied, any number that
    /// was stored can be erased), or an e-mail address. Errors are located at
    /// `["query", name]`.
    pub fn from_query<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
        region: Region,
    ) -> Result<Self, Vec<FieldError>> {
        let mut phones = Vec::new();
        let mut emails = Vec::new();
        for (name, value) in params {
            match name {
                "phone" => phones.push(value),
                "email" => emails.push(value),
                _ => {}
            }
        }
        let mut errors = Vec::new();
        for (name, n) in [("phone", phones.len()), ("email", emails.len())] {
            if n > 1 {
                errors.push(field(
                    &["query", name],
                    format!("Give {name} once."),
                    "value_error.duplicate",
                ));
            }
        }
        match (phones.first(), emails.first()) {
            (None, None) => {
                for name in ["phone", "email"] {
                    errors.push(field(
                        &["query", name],
                        "Give the person's phone or email (exactly one).",
                        "missing",
                    ));
                }
            }
            (Some(_), Some(_)) => errors.push(field(
                &["query"],
                "Give phone or email, not both.",
                "value_error.exclusive",
            )),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Some(p) = phones.first() {
            // Any number that may have been stored can be erased: what the
            // form accepts, or a syntactically valid E.164 text (a number
            // the metadata no longer validates, stored before).
            return PhoneNumber::parse(p, region)
                .or_else(|e| PhoneNumber::from_trusted_e164(p.trim()).map_err(|_| e))
                .map(PersonKey::Phone)
                .map_err(|e| vec![field(&["query", "phone"], e, "value_error.phone")]);
        }
        let e = emails.first().copied().unwrap_or_default();
        Email::parse(e)
            .map(PersonKey::Email)
            .map_err(|e| vec![field(&["query", "email"], e, "value_error.email")])
    }

    /// `"phone"` or `"email"` (for the audit log: the value is never logged).
    pub fn kind(&self) -> &'static str {
        match self {
            PersonKey::Phone(_) => "phone",
            PersonKey::Email(_) => "email",
        }
    }

    /// The texts that identify this person inside a raw payload: the
    /// number's digits without `+` (so both `+55…` and form-encoded
    /// `%2B55…` match), or the e-mail as is and with `@` percent-encoded.
    /// Stores delete the raw payloads containing any of them.
    pub fn payload_needles(&self) -> Vec<String> {
        match self {
            PersonKey::Phone(p) => vec![p.as_e164().trim_start_matches('+').to_owned()],
            PersonKey::Email(e) => {
                let lower = e.as_str().to_lowercase();
                vec![lower.clone(), lower.replace('@', "%40")]
            }
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RetentionReport {
    /// Calls whose personal data was erased.
    pub calls_erased: u64,
    /// Raw payloads deleted.
    pub events_deleted: u64,
    /// A batch was full: more is probably due (run again now).
    pub more: bool,
}

impl RetentionReport {
    /// A report with these counts.
    pub fn new(calls_erased: u64, events_deleted: u64, more: bool) -> Self {
        Self {
            calls_erased,
            events_deleted,
            more,
        }
    }
}

/// The outcome of [`PersonalDataStore::retention_pass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetentionPass {
    /// This replica ran the pass.
    Ran(RetentionReport),
    /// Another replica's pass was running: nothing was done.
    Skipped,
}

/// What an erasure request did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ErasureReport {
    /// Settled calls of this person whose personal data was erased now.
    pub calls_erased: u64,
    /// Calls of this person still in progress: marked, and erased by the
    /// first retention pass after they settle (a live call is never broken).
    pub calls_pending: u64,
    /// Raw payloads deleted: those of the erased calls, and any other
    /// (orphans included) that contain the number or the e-mail.
    pub events_deleted: u64,
}

impl ErasureReport {
    /// A report with these counts.
    pub fn new(calls_erased: u64, calls_pending: u64, events_deleted: u64) -> Self {
        Self {
            calls_erased,
            calls_pending,
            events_deleted,
        }
    }
}

/// Who did something: a short keyed fingerprint of the credential used
/// (never the credential itself), e.g. `tok_1a2b3c4d5e6f7a8b`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ActorId(String);

impl ActorId {
    /// Wraps an id (at most 64 characters, no control characters: longer
    /// or odd input is cut and cleaned, it is an id, not a secret).
    pub fn new(id: impl Into<String>) -> Self {
        let id: String = id.into();
        Self(id.chars().filter(|c| !c.is_control()).take(64).collect())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorId({})", self.0)
    }
}

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the audit log. Holds no personal data: who (an
/// [`ActorId`]), what (an action, the call id, a short detail), when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: ActorId,
    /// What: [`AuditEntry::READ_CALL`], [`AuditEntry::EXPORT_CALLS`] or
    /// [`AuditEntry::ERASE_PERSON`].
    pub action: String,
    /// The call concerned, if one.
    pub call_id: Option<CallId>,
    /// Anything else (the route; for an erasure, the key kind and counts).
    pub detail: Option<String>,
}

impl AuditEntry {
    /// An unmasked read of a call's details.
    pub const READ_CALL: &'static str = "read_call_unmasked";
    /// An erasure request.
    pub const ERASE_PERSON: &'static str = "erase_person";
    /// An export of many calls' personal data (the results CSV).
    pub const EXPORT_CALLS: &'static str = "export_calls_unmasked";

    /// An entry.
    pub fn new(
        at: DateTime<Utc>,
        actor: ActorId,
        action: impl Into<String>,
        call_id: Option<CallId>,
        detail: Option<String>,
    ) -> Self {
        Self {
            at,
            actor,
            action: action.into(),
            call_id,
            detail,
        }
    }
}

/// Stores personal data's life cycle: retention, erasure, audit.
///
/// # What implementations must guarantee
/// - Erasing a call does what [`Call::erase`] does to it, in the store's
///   representation: afterwards [`crate::CallStore::get`] returns a call
///   equal to the one [`Call::erase`] gives (same placeholders, same
///   `erased_at`), with its version bumped (so a writer holding the old
///   version gets a conflict and reloads), and its raw payloads are
///   deleted. An erased call always loads: stores build its activist with
///   [`crate::Activist::erased`] and never parse the placeholders.
/// - [`PersonalDataStore::retention_pass`] erases at most `limit` calls,
///   oldest first, that are [settled](Call::is_settled), not yet erased,
///   and created before `cutoff` or marked by an erasure request; and
///   deletes at most `limit` raw payloads received before `cutoff` (orphans
///   included), plus payloads stored for an erased call after its erasure
///   (erased within [`LATE_PAYLOAD_WINDOW`]). Nothing newer than `cutoff`
///   is touched. Calls not settled are left alone, whatever their age.
/// - Passes run on one replica at a time: a pass that finds another
///   running returns [`RetentionPass::Skipped`] without waiting and
///   without doing anything (PostgreSQL: a transaction-level advisory
///   lock, never a session lock on a pooled connection).
/// - [`PersonalDataStore::erase_person`] erases now the settled calls of
///   the person, marks the unsettled ones (erased by the first pass after
///   they settle), and deletes the raw payloads of the erased calls plus
///   every payload not of a still-unsettled call that contains one of
///   [`PersonKey::payload_needles`]. Already-erased calls are not counted.
/// - The audit log is append-only and durable like the calls.
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait PersonalDataStore: Send + Sync + 'static {
    /// One retention pass (one batch); see the trait's guarantees.
    async fn retention_pass(
        &self,
        cutoff: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<RetentionPass, StoreError>;

    /// Erases one person's data as of `now`; see the trait's guarantees.
    async fn erase_person(
        &self,
        who: &PersonKey,
        now: DateTime<Utc>,
    ) -> Result<ErasureReport, StoreError>;

    /// Appends an entry to the audit log.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;

    /// The last `limit` audit entries, newest first.
    async fn audit_entries(&self, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}

/// How long after a call's erasure a retention pass still looks for
/// payloads stored for it late (a provider callback that arrives after the
/// erasure of a just-settled call).
pub const LATE_PAYLOAD_WINDOW: TimeDelta = TimeDelta::days(7);

/// Retention settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionConfig {
    /// Personal data older than this is erased (`RETENTION_DAYS`, 180 days).
    pub retention: TimeDelta,
    /// Calls erased and payloads deleted per pass, each at most.
    pub batch: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            retention: TimeDelta::days(180),
            batch: 500,
        }
    }
}

impl RetentionConfig {
    /// Keeps personal data `days` days (at least 1).
    pub fn days(days: u32) -> Self {
        Self {
            retention: TimeDelta::days(i64::from(days.max(1))),
            ..Self::default()
        }
    }

    /// Sets the batch size (at least 1).
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }
}

/// The personal-data policy: runs retention passes, erases people on
/// request and writes the audit log.
#[derive(Clone)]
pub struct Privacy {
    store: Arc<dyn PersonalDataStore>,
    clock: Arc<dyn Clock>,
    config: RetentionConfig,
}

impl fmt::Debug for Privacy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Privacy")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Privacy {
    /// The policy over `store`.
    pub fn new(
        store: Arc<dyn PersonalDataStore>,
        clock: Arc<dyn Clock>,
        config: RetentionConfig,
    ) -> Self {
        Self {
            store,
            clock,
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &RetentionConfig {
        &self.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn PersonalDataStore> {
        &self.store
    }

    /// One retention pass: erases calls created more than the retention
    /// period ago (and those an erasure request marked, once settled),
    /// deletes raw payloads received before that. Run it again at once
    /// while the report says [`RetentionReport::more`].
    pub async fn retention_pass(&self) -> Result<RetentionPass, StoreError> {
        let now = self.clock.now();
        let cutoff = now - self.config.retention;
        self.store
            .retention_pass(cutoff, now, self.config.batch)
            .await
    }

    /// Erases one person's data (see [`PersonalDataStore::erase_person`])
    /// and writes who asked to the audit log (the key's kind and the
    /// counts, never its value).
    pub async fn erase(
        &self,
        who: &PersonKey,
        actor: &ActorId,
    ) -> Result<ErasureReport, StoreError> {
        let now = self.clock.now();
        let report = self.store.erase_person(who, now).await?;
        let detail = format!(
            "by {}: {} calls erased, {} pending, {} payloads deleted",
            who.kind(),
            report.calls_erased,
            report.calls_pending,
            report.events_deleted
        );
        self.store
            .append_audit(&AuditEntry::new(
                now,
                actor.clone(),
                AuditEntry::ERASE_PERSON,
                None,
                Some(detail),
            ))
            .await?;
        Ok(report)
    }

    /// Records that `actor` is about to export many calls' personal data
    /// (`what`: the route and the selection, e.g. widget and period). Must
    /// succeed before the export starts.
    pub async fn record_unmasked_export(
        &self,
        actor: &ActorId,
        what: String,
    ) -> Result<(), StoreError> {
        self.store
            .append_audit(&AuditEntry::new(
                self.clock.now(),
                actor.clone(),
                AuditEntry::EXPORT_CALLS,
                None,
                Some(what),
            ))
            .await
    }

    /// Records that `actor` is about to read `call` unmasked through
    /// `route`. Must succeed before the data is shown (no audit entry, no
    /// unmasked read). An erased call shows no personal data: nothing is
    /// recorded and `Ok(false)` is returned.
    pub async fn record_unmasked_read(
        &self,
        actor: &ActorId,
        route: &str,
        call: &Call,
    ) -> Result<bool, StoreError> {
        if call.is_erased() {
            return Ok(false);
        }
        self.store
            .append_audit(&AuditEntry::new(
                self.clock.now(),
                actor.clone(),
                AuditEntry::READ_CALL,
                Some(call.id),
                Some(route.to_owned()),
            ))
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::{CallEvent, Leg, LegError};
    use crate::domain::{Activist, PersonName, Target, WidgetId};
    use crate::fakes::ManualClock;
    use crate::memory::InMemoryCallStore;

    fn call() -> Call {
        let phone = PhoneNumber::parse_e164("+5511912345678").unwrap();
        Call::new(
            CallId::new(),
            WidgetId::new(1).unwrap(),
            Activist {
                name: PersonName::parse("Ana Souza").unwrap(),
                first_name: PersonName::parse("Ana").ok(),
                last_name: PersonName::parse("Souza").ok(),
                email: Email::parse("ana@example.org").unwrap(),
                phone: phone.clone(),
            },
            Target {
                name: PersonName::parse("Deputada").unwrap(),
                phone: PhoneNumber::parse_e164("+5561998765432").unwrap(),
            },
            Some(phone),
            Utc::now(),
        )
    }

    #[test]
    fn erasing_keeps_everything_but_the_personal_data() {
        let mut c = call();
        let failed = CallEvent::DialFailed {
            leg: Leg::Activist,
            error: LegError {
                code: Some(21_211),
                message: "Invalid 'To' +5511912345678".into(),
            },
        };
        c = c.apply(&failed, Utc::now()).0;
        let before = c.clone();
        let t = Utc::now();
        c.erase(t);
        assert!(c.is_erased() && c.activist.is_erased());
        assert_eq!(c.facts.erased_at, Some(t));
        assert!(c.target_caller_id.as_ref().unwrap().is_erased());
        assert_eq!(c.target, before.target);
        assert_eq!(c.state(), before.state());
        let e = c.facts.activist.error.clone().unwrap();
        assert_eq!((e.code, e.message.as_str()), (Some(21_211), "[erased]"));
        // A later error message is redacted too, and erasure is kept.
        let again = CallEvent::DialFailed {
            leg: Leg::Target,
            error: LegError {
                code: Some(1),
                message: "From +5511912345678".into(),
            },
        };
        let next = c.apply(&again, Utc::now()).0;
        assert_eq!(next.facts.target.error.unwrap().message, "[erased]");
        assert_eq!(next.facts.erased_at, Some(t));
        // Erasing twice keeps the first time.
        let mut twice = c.clone();
        twice.erase(t + TimeDelta::seconds(5));
        assert_eq!(twice, c);
        // It serialises and reads back (no poisoned placeholder).
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Call>(&json).unwrap(), c);
    }

    #[test]
    fn an_erasure_key_is_exactly_one_valid_phone_or_email() {
        let q = |pairs: &[(&'static str, &'static str)]| {
            PersonKey::from_query(pairs.iter().copied(), Region::BRAZIL)
        };
        assert_eq!(
            q(&[("phone", "(11) 91234-5678")]).unwrap(),
            PersonKey::Phone(PhoneNumber::parse_e164("+5511912345678").unwrap())
        );
        assert_eq!(
            q(&[("email", "Ana@Example.org"), ("x", "1")])
                .unwrap()
                .kind(),
            "email"
        );
        let kinds = |r: Result<PersonKey, Vec<FieldError>>| -> Vec<String> {
            r.unwrap_err().into_iter().map(|e| e.kind).collect()
        };
        assert_eq!(kinds(q(&[])), ["missing", "missing"]);
        assert_eq!(
            kinds(q(&[("phone", "11912345678"), ("email", "a@b.org")])),
            ["value_error.exclusive"]
        );
        assert_eq!(kinds(q(&[("phone", "")])), ["value_error.phone"]);
        assert_eq!(
            kinds(q(&[("phone", "11 9123A-5678")])),
            ["value_error.phone"]
        );
        // A premium number an older version stored (no longer valid input)
        // can still be erased.
        assert_eq!(
            q(&[("phone", "+559001234567")]).unwrap(),
            PersonKey::Phone(PhoneNumber::from_trusted_e164("+559001234567").unwrap())
        );
        assert_eq!(kinds(q(&[("email", "nope")])), ["value_error.email"]);
        assert_eq!(
            kinds(q(&[("email", "a@b.org"), ("email", "c@d.org")])),
            ["value_error.duplicate"]
        );
    }

    #[test]
    fn payload_needles_match_form_and_json_encodings() {
        let p = PersonKey::Phone(PhoneNumber::parse_e164("+5511912345678").unwrap());
        assert_eq!(p.payload_needles(), ["5511912345678"]);
        let e = PersonKey::Email(Email::parse("Ana@Example.org").unwrap());
        assert_eq!(
            e.payload_needles(),
            ["ana@example.org", "ana%40example.org"]
        );
    }

    #[tokio::test]
    async fn reads_of_erased_calls_and_erasures_are_audited_as_documented() {
        let store = Arc::new(InMemoryCallStore::new());
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let privacy = Privacy::new(store.clone(), clock, RetentionConfig::default());
        let actor = ActorId::new("tok_1");
        let mut c = call();
        assert!(
            privacy
                .record_unmasked_read(&actor, "GET", &c)
                .await
                .unwrap()
        );
        c.erase(Utc::now());
        assert!(
            !privacy
                .record_unmasked_read(&actor, "GET", &c)
                .await
                .unwrap()
        );
        let who = PersonKey::Email(Email::parse("ana@example.org").unwrap());
        privacy.erase(&who, &actor).await.unwrap();
        let log = store.all_audit_entries();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].action, AuditEntry::READ_CALL);
        assert_eq!(log[1].action, AuditEntry::ERASE_PERSON);
        assert_eq!(
            log[1].detail.as_deref(),
            Some("by email: 0 calls erased, 0 pending, 0 payloads deleted")
        );
        assert!(!format!("{log:?}").contains("ana@"));
    }

    #[test]
    fn retention_config_is_bounded() {
        assert_eq!(RetentionConfig::default().retention, TimeDelta::days(180));
        assert_eq!(RetentionConfig::days(0).retention, TimeDelta::days(1));
        assert_eq!(RetentionConfig::default().batch(0).batch, 1);
        assert_eq!(ActorId::new("a\nb".repeat(40)).as_str().len(), 64);
    }
}
