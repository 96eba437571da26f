-- bonde-pressure store, SQLite schema (see docs/storage.md).
-- Ids are hyphenated lowercase UUID text; timestamps are UTC text
-- `YYYY-MM-DDTHH:MM:SS.ffffffZ` (fixed width, so text order is time order).

CREATE TABLE phone_calls (
    id                  TEXT    PRIMARY KEY NOT NULL,
    widget_id           INTEGER NOT NULL,
    activist_name       TEXT    NOT NULL,
    activist_first_name TEXT,
    activist_last_name  TEXT,
    activist_email      TEXT    NOT NULL,
    from_phone_number   TEXT    NOT NULL, -- the activist's number (leg A)
    from_call_sid       TEXT,             -- leg A's CallSid
    to_phone_number     TEXT    NOT NULL, -- the target's number (leg B)
    to_call_sid         TEXT,             -- leg B's CallSid
    target_name         TEXT    NOT NULL,
    target_caller_id    TEXT,
    conference_sid      TEXT,
    state               TEXT    NOT NULL, -- DetailedState::as_str()
    settled             INTEGER NOT NULL CHECK (settled IN (0, 1)),
    connected_secs      INTEGER,          -- talk time of completed calls
    facts               TEXT    NOT NULL CHECK (json_valid(facts)),
    version             INTEGER NOT NULL CHECK (version >= 0),
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL
) STRICT;

-- find_by_sid: either leg's CallSid.
CREATE INDEX phone_calls_from_call_sid_idx ON phone_calls (from_call_sid);
CREATE INDEX phone_calls_to_call_sid_idx ON phone_calls (to_call_sid);
-- list_unfinished (reconciliation): unsettled calls (Call::is_settled), oldest update first.
CREATE INDEX phone_calls_unfinished_idx ON phone_calls (updated_at, id) WHERE settled = 0;
-- stats: one widget's calls over a period.
CREATE INDEX phone_calls_widget_created_idx ON phone_calls (widget_id, created_at);

CREATE TABLE twilio_calls (
    sid               TEXT    PRIMARY KEY NOT NULL,
    phone_call_id     TEXT    NOT NULL REFERENCES phone_calls (id) ON DELETE CASCADE,
    leg               TEXT    NOT NULL CHECK (leg IN ('activist', 'target')),
    status            TEXT,
    answered_by       TEXT,
    from_phone_number TEXT,
    to_phone_number   TEXT    NOT NULL,
    duration_secs     INTEGER,
    sip_response_code INTEGER,
    error_code        INTEGER,
    error_message     TEXT,
    ringing_at        TEXT,
    answered_at       TEXT,
    ended_at          TEXT,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL
) STRICT;

CREATE INDEX twilio_calls_phone_call_id_idx ON twilio_calls (phone_call_id);

CREATE TABLE twilio_call_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_call_id   TEXT    REFERENCES phone_calls (id) ON DELETE SET NULL,
    call_sid        TEXT,
    kind            TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    sequence_number INTEGER,
    received_at     TEXT    NOT NULL
) STRICT;

CREATE INDEX twilio_call_events_phone_call_id_idx ON twilio_call_events (phone_call_id, id);
CREATE INDEX twilio_call_events_call_sid_idx ON twilio_call_events (call_sid, id);
