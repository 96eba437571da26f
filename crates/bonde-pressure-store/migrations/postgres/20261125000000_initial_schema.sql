-- bonde-pressure store, PostgreSQL schema (see docs/storage.md).

-- One pressure call. Identity columns are written once; `facts` holds the
-- whole join-semilattice of what is known; `state`, `settled`,
-- `connected_secs`, the leg SIDs and `conference_sid` are projections of the
-- facts kept for queries (derived by the core on every commit).
CREATE TABLE phone_calls (
    id                  uuid        PRIMARY KEY,
    widget_id           bigint      NOT NULL,
    activist_name       text        NOT NULL,
    activist_first_name text,
    activist_last_name  text,
    activist_email      text        NOT NULL,
    from_phone_number   text        NOT NULL, -- the activist's number (leg A)
    from_call_sid       text,                 -- leg A's CallSid
    to_phone_number     text        NOT NULL, -- the target's number (leg B)
    to_call_sid         text,                 -- leg B's CallSid
    target_name         text        NOT NULL,
    target_caller_id    text,
    conference_sid      text,
    state               text        NOT NULL, -- DetailedState::as_str()
    settled             boolean     NOT NULL,
    connected_secs      bigint,               -- talk time of completed calls
    facts               jsonb       NOT NULL,
    version             bigint      NOT NULL CHECK (version >= 0),
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);

-- find_by_sid: either leg's CallSid.
CREATE INDEX phone_calls_from_call_sid_idx ON phone_calls (from_call_sid) WHERE from_call_sid IS NOT NULL;
CREATE INDEX phone_calls_to_call_sid_idx ON phone_calls (to_call_sid) WHERE to_call_sid IS NOT NULL;
-- list_unfinished (reconciliation): unsettled calls (Call::is_settled), oldest update first.
CREATE INDEX phone_calls_unfinished_idx ON phone_calls (updated_at, id) WHERE NOT settled;
-- stats: one widget's calls over a period.
CREATE INDEX phone_calls_widget_created_idx ON phone_calls (widget_id, created_at);

-- One Twilio call leg, as last known (upserted from the facts on every commit).
CREATE TABLE twilio_calls (
    sid               text        PRIMARY KEY,
    phone_call_id     uuid        NOT NULL REFERENCES phone_calls (id) ON DELETE CASCADE,
    leg               text        NOT NULL CHECK (leg IN ('activist', 'target')),
    status            text,
    answered_by       text,
    from_phone_number text,
    to_phone_number   text        NOT NULL,
    duration_secs     bigint,
    sip_response_code integer,
    error_code        bigint,
    error_message     text,
    ringing_at        timestamptz,
    answered_at       timestamptz,
    ended_at          timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE INDEX twilio_calls_phone_call_id_idx ON twilio_calls (phone_call_id);

-- Every webhook payload as received, in insertion order; `phone_call_id` is
-- NULL for payloads naming no known call.
CREATE TABLE twilio_call_events (
    id              bigserial   PRIMARY KEY,
    phone_call_id   uuid        REFERENCES phone_calls (id) ON DELETE SET NULL,
    call_sid        text,
    kind            text        NOT NULL,
    payload         text        NOT NULL,
    sequence_number bigint,
    received_at     timestamptz NOT NULL
);

CREATE INDEX twilio_call_events_phone_call_id_idx ON twilio_call_events (phone_call_id, id);
CREATE INDEX twilio_call_events_call_sid_idx ON twilio_call_events (call_sid, id) WHERE call_sid IS NOT NULL;
