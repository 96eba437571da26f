-- Hourly rollup of settled calls for the results report (docs/storage.md,
-- "Results", the rollup). Invariant, kept by the trigger below in the writing
-- transaction: each table holds exactly the aggregate of the *settled* rows
-- of phone_calls by (widget, UTC hour of created_at, ...); a group with no
-- calls has no row. A row not backfilled yet (funnel_stage NULL) counts as
-- stage 1, as the report reads it.

-- No writes while the trigger is installed and the tables are filled.
LOCK TABLE phone_calls IN SHARE ROW EXCLUSIVE MODE;

-- Totals, funnel and series.
CREATE TABLE results_hourly (
    widget_id    bigint      NOT NULL,
    hour         timestamptz NOT NULL, -- date_trunc('hour', created_at, 'UTC')
    state        text        NOT NULL,
    funnel_stage smallint    NOT NULL,
    calls        bigint      NOT NULL CHECK (calls > 0),
    PRIMARY KEY (widget_id, hour, state, funnel_stage)
);

-- Per-target counts.
CREATE TABLE results_target_hourly (
    widget_id       bigint      NOT NULL,
    hour            timestamptz NOT NULL,
    target_name     text        NOT NULL,
    to_phone_number text        NOT NULL,
    calls           bigint      NOT NULL CHECK (calls > 0),
    connected       bigint      NOT NULL, -- funnel_stage >= 5
    completed       bigint      NOT NULL, -- state = 'completed'
    talk_secs       bigint      NOT NULL, -- SUM(connected_secs)
    PRIMARY KEY (widget_id, hour, target_name, to_phone_number)
);

-- Talk-time histogram per target (calls with connected_secs), for exact
-- nearest-rank percentiles.
CREATE TABLE results_talk_hourly (
    widget_id       bigint      NOT NULL,
    hour            timestamptz NOT NULL,
    target_name     text        NOT NULL,
    to_phone_number text        NOT NULL,
    talk_secs       bigint      NOT NULL,
    calls           bigint      NOT NULL CHECK (calls > 0),
    PRIMARY KEY (widget_id, hour, target_name, to_phone_number, talk_secs)
);

-- Adds (sign 1) or removes (sign -1) one row's contribution. Removing
-- deletes a group's row when this was its last call.
CREATE FUNCTION results_rollup_apply(r phone_calls, sign bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    h timestamptz := date_trunc('hour', r.created_at, 'UTC');
    stage smallint := COALESCE(r.funnel_stage, 1);
    conn bigint := (COALESCE(r.funnel_stage, 1) >= 5)::int;
    comp bigint := (r.state = 'completed')::int;
    talk bigint := COALESCE(r.connected_secs, 0);
BEGIN
    IF sign > 0 THEN
        INSERT INTO results_hourly AS t (widget_id, hour, state, funnel_stage, calls)
            VALUES (r.widget_id, h, r.state, stage, 1)
            ON CONFLICT (widget_id, hour, state, funnel_stage)
            DO UPDATE SET calls = t.calls + 1;
        INSERT INTO results_target_hourly AS t (widget_id, hour, target_name,
                to_phone_number, calls, connected, completed, talk_secs)
            VALUES (r.widget_id, h, r.target_name, r.to_phone_number, 1, conn, comp, talk)
            ON CONFLICT (widget_id, hour, target_name, to_phone_number)
            DO UPDATE SET calls = t.calls + 1, connected = t.connected + conn,
                completed = t.completed + comp, talk_secs = t.talk_secs + talk;
        IF r.connected_secs IS NOT NULL THEN
            INSERT INTO results_talk_hourly AS t (widget_id, hour, target_name,
                    to_phone_number, talk_secs, calls)
                VALUES (r.widget_id, h, r.target_name, r.to_phone_number, r.connected_secs, 1)
                ON CONFLICT (widget_id, hour, target_name, to_phone_number, talk_secs)
                DO UPDATE SET calls = t.calls + 1;
        END IF;
        RETURN;
    END IF;

    DELETE FROM results_hourly
        WHERE widget_id = r.widget_id AND hour = h AND state = r.state
            AND funnel_stage = stage AND calls = 1;
    IF NOT FOUND THEN
        UPDATE results_hourly SET calls = calls - 1
            WHERE widget_id = r.widget_id AND hour = h AND state = r.state
                AND funnel_stage = stage;
    END IF;
    DELETE FROM results_target_hourly
        WHERE widget_id = r.widget_id AND hour = h AND target_name = r.target_name
            AND to_phone_number = r.to_phone_number AND calls = 1;
    IF NOT FOUND THEN
        UPDATE results_target_hourly SET calls = calls - 1, connected = connected - conn,
                completed = completed - comp, talk_secs = talk_secs - talk
            WHERE widget_id = r.widget_id AND hour = h AND target_name = r.target_name
                AND to_phone_number = r.to_phone_number;
    END IF;
    IF r.connected_secs IS NOT NULL THEN
        DELETE FROM results_talk_hourly
            WHERE widget_id = r.widget_id AND hour = h AND target_name = r.target_name
                AND to_phone_number = r.to_phone_number AND talk_secs = r.connected_secs
                AND calls = 1;
        IF NOT FOUND THEN
            UPDATE results_talk_hourly SET calls = calls - 1
                WHERE widget_id = r.widget_id AND hour = h AND target_name = r.target_name
                    AND to_phone_number = r.to_phone_number AND talk_secs = r.connected_secs;
        END IF;
    END IF;
END $$;

CREATE FUNCTION results_rollup_trigger() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND OLD.settled THEN
        PERFORM results_rollup_apply(OLD, -1);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.settled THEN
        PERFORM results_rollup_apply(NEW, 1);
    END IF;
    RETURN NULL;
END $$;

-- The WHEN clauses keep the function out of every commit that does not
-- settle a call or change a settled call's projected values.
CREATE TRIGGER phone_calls_results_rollup_insert AFTER INSERT ON phone_calls
    FOR EACH ROW WHEN (NEW.settled) EXECUTE FUNCTION results_rollup_trigger();
CREATE TRIGGER phone_calls_results_rollup_delete AFTER DELETE ON phone_calls
    FOR EACH ROW WHEN (OLD.settled) EXECUTE FUNCTION results_rollup_trigger();
CREATE TRIGGER phone_calls_results_rollup_update AFTER UPDATE ON phone_calls
    FOR EACH ROW WHEN ((OLD.settled OR NEW.settled) AND
        ROW(OLD.settled, OLD.widget_id, OLD.created_at, OLD.state, OLD.funnel_stage,
            OLD.target_name, OLD.to_phone_number, OLD.connected_secs)
        IS DISTINCT FROM
        ROW(NEW.settled, NEW.widget_id, NEW.created_at, NEW.state, NEW.funnel_stage,
            NEW.target_name, NEW.to_phone_number, NEW.connected_secs))
    EXECUTE FUNCTION results_rollup_trigger();

-- Backfill from the settled rows.
INSERT INTO results_hourly (widget_id, hour, state, funnel_stage, calls)
SELECT widget_id, date_trunc('hour', created_at, 'UTC'), state, COALESCE(funnel_stage, 1),
    COUNT(*)
FROM phone_calls WHERE settled GROUP BY 1, 2, 3, 4;

INSERT INTO results_target_hourly (widget_id, hour, target_name, to_phone_number, calls,
    connected, completed, talk_secs)
SELECT widget_id, date_trunc('hour', created_at, 'UTC'), target_name, to_phone_number,
    COUNT(*), COUNT(*) FILTER (WHERE funnel_stage >= 5),
    COUNT(*) FILTER (WHERE state = 'completed'), COALESCE(SUM(connected_secs), 0)
FROM phone_calls WHERE settled GROUP BY 1, 2, 3, 4;

INSERT INTO results_talk_hourly (widget_id, hour, target_name, to_phone_number, talk_secs,
    calls)
SELECT widget_id, date_trunc('hour', created_at, 'UTC'), target_name, to_phone_number,
    connected_secs, COUNT(*)
FROM phone_calls WHERE settled AND connected_secs IS NOT NULL GROUP BY 1, 2, 3, 4, 5;

-- The report reads the unsettled calls of the rollup's hours from the rows.
CREATE INDEX phone_calls_results_unsettled_idx ON phone_calls (widget_id, created_at)
    WHERE NOT settled;
