-- Scratch data for benches/commit.pgbench: one connected call at version 0
-- (see docs/storage.md).
INSERT INTO phone_calls (id, widget_id, activist_name, activist_first_name, activist_last_name,
    activist_email, from_phone_number, from_call_sid, to_phone_number, to_call_sid, target_name,
    target_caller_id, conference_sid, state, settled, connected_secs, facts, version, created_at,
    updated_at)
VALUES ('00000000-0000-4000-8000-000000000001', 1, 'Ana Souza', 'Ana', 'Souza', 'ativista@example.org', '+5511912345678', 'CA0a1b2c3d4e5f60718293a4b5c6d7e8f9',
    '+5561998765432', 'CA1b2c3d4e5f60718293a4b5c6d7e8f90a', 'Deputada Maria', '+5511987654321', 'CF2c3d4e5f60718293a4b5c6d7e8f90a1b', 'connected', false, NULL,
    '{"activist": {"sid": "CA0a1b2c3d4e5f60718293a4b5c6d7e8f9", "status": "in-progress", "answered_by": null, "joined_conference": true, "left_conference": false, "duration_secs": null, "sip_response_code": null, "error": null, "ringing_at": "2026-03-01T12:00:01.123456Z", "answered_at": "2026-03-01T12:00:05.123456Z", "ended_at": null}, "target": {"sid": "CA1b2c3d4e5f60718293a4b5c6d7e8f90a", "status": "in-progress", "answered_by": null, "joined_conference": true, "left_conference": false, "duration_secs": null, "sip_response_code": null, "error": null, "ringing_at": "2026-03-01T12:00:12.123456Z", "answered_at": "2026-03-01T12:00:15.123456Z", "ended_at": null}, "prompted": true, "confirmed": true, "conference_sid": "CF2c3d4e5f60718293a4b5c6d7e8f90a1b", "conference_started": true, "conference_ended": false, "participants": {"CA0a1b2c3d4e5f60718293a4b5c6d7e8f9": {"joined": true, "left": false}, "CA1b2c3d4e5f60718293a4b5c6d7e8f90a": {"joined": true, "left": false}}, "expired": false, "requested": {"dial_target": true, "hang_up_activist": false, "hang_up_target": false, "end_conference": false}}'::jsonb, 0, now(), now())
ON CONFLICT (id) DO UPDATE SET version = 0;
