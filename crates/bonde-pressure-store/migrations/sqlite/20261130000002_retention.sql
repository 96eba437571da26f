-- Retention and erasure of personal data, and the audit log (docs/storage.md).

-- When the call's personal data was erased (also in facts.erased_at, which
-- is what the call is read from); written by the retention pass and by
-- erasure requests only.
ALTER TABLE phone_calls ADD COLUMN erased_at TEXT;
-- An erasure request named this call while it was still in progress: the
-- first retention pass after it settles erases it.
ALTER TABLE phone_calls ADD COLUMN erasure_requested_at TEXT;

-- The retention pass: calls not yet erased, oldest first.
CREATE INDEX phone_calls_retention_idx ON phone_calls (created_at) WHERE erased_at IS NULL;
-- ... and calls an erasure request marked.
CREATE INDEX phone_calls_erasure_requested_idx ON phone_calls (created_at)
    WHERE erasure_requested_at IS NOT NULL AND erased_at IS NULL;
-- Late payloads of recently erased calls.
CREATE INDEX phone_calls_erased_at_idx ON phone_calls (erased_at) WHERE erased_at IS NOT NULL;
-- Erasure requests: by the activist's number or e-mail (erased rows hold
-- placeholders: left out).
CREATE INDEX phone_calls_from_phone_number_idx ON phone_calls (from_phone_number)
    WHERE erased_at IS NULL;
CREATE INDEX phone_calls_activist_email_idx ON phone_calls (lower(activist_email))
    WHERE erased_at IS NULL;
-- The retention pass deletes raw payloads by age.
CREATE INDEX twilio_call_events_received_at_idx ON twilio_call_events (received_at);

-- Who read personal data unmasked, or asked for an erasure. No personal
-- data: the actor is a keyed fingerprint of the credential.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       TEXT    NOT NULL,
    actor    TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    call_id  TEXT,
    detail   TEXT
) STRICT;
