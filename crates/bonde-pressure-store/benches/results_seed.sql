-- Seeds 1 000 000 calls of widget 777 over 30 days (2026-10-01 .. 2026-10-31
-- UTC), for the results benchmark (docs/performance.md, "Campaign results").
-- Ten outcomes in turn (3 completed with 20-319 s of talk, spread by a hash
-- of the row number so that each target sees every value, 7 others), 20
-- targets. Only the projected columns the report reads are realistic; the
-- facts are '{}' (the report never decodes them).
DELETE FROM phone_calls WHERE widget_id = 777;
INSERT INTO phone_calls (id, widget_id, activist_name, activist_email, from_phone_number,
    to_phone_number, target_name, state, settled, connected_secs, facts, version,
    created_at, updated_at, funnel_stage)
SELECT gen_random_uuid(), 777, 'Ativista ' || g, 'a' || g || '@example.org',
    '+55119' || lpad((g % 100000000)::text, 8, '0'),
    '+55619999' || lpad((g % 20)::text, 4, '0'),
    'Alvo ' || (g % 20),
    (ARRAY['completed', 'completed', 'completed', 'activist_no_answer', 'activist_busy',
           'target_busy', 'target_no_answer', 'not_confirmed', 'abandoned',
           'target_voicemail'])[1 + g % 10],
    true,
    CASE WHEN g % 10 < 3 THEN 20 + abs(hashint8(g)) % 300 END,
    '{}'::jsonb, 1,
    timestamptz '2026-10-01 00:00:00+00' + g * interval '2.592 seconds',
    timestamptz '2026-10-01 00:00:00+00' + g * interval '2.592 seconds' + interval '2 minutes',
    (ARRAY[6, 6, 6, 1, 1, 4, 4, 2, 4, 4])[1 + g % 10]
FROM generate_series(0, 999999) AS g;
ANALYZE phone_calls;
