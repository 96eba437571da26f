-- Hourly rollup of settled calls for the results report (docs/storage.md,
-- "Results", the rollup). Invariant, kept by the triggers below in the writing
-- transaction: each table holds exactly the aggregate of the *settled* rows
-- of phone_calls by (widget, UTC hour of created_at, ...); a group with no
-- calls has no row. A row not backfilled yet (funnel_stage NULL) counts as
-- stage 1, as the report reads it. `hour` is the first 13 characters of
-- created_at's text (`YYYY-MM-DDTHH`, UTC).

-- Totals, funnel and series.
CREATE TABLE results_hourly (
    widget_id    INTEGER NOT NULL,
    hour         TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    funnel_stage INTEGER NOT NULL,
    calls        INTEGER NOT NULL CHECK (calls > 0),
    PRIMARY KEY (widget_id, hour, state, funnel_stage)
) STRICT, WITHOUT ROWID;

-- Per-target counts.
CREATE TABLE results_target_hourly (
    widget_id       INTEGER NOT NULL,
    hour            TEXT    NOT NULL,
    target_name     TEXT    NOT NULL,
    to_phone_number TEXT    NOT NULL,
    calls           INTEGER NOT NULL CHECK (calls > 0),
    connected       INTEGER NOT NULL, -- funnel_stage >= 5
    completed       INTEGER NOT NULL, -- state = 'completed'
    talk_secs       INTEGER NOT NULL, -- SUM(connected_secs)
    PRIMARY KEY (widget_id, hour, target_name, to_phone_number)
) STRICT, WITHOUT ROWID;

-- Talk-time histogram per target (calls with connected_secs), for exact
-- nearest-rank percentiles.
CREATE TABLE results_talk_hourly (
    widget_id       INTEGER NOT NULL,
    hour            TEXT    NOT NULL,
    target_name     TEXT    NOT NULL,
    to_phone_number TEXT    NOT NULL,
    talk_secs       INTEGER NOT NULL,
    calls           INTEGER NOT NULL CHECK (calls > 0),
    PRIMARY KEY (widget_id, hour, target_name, to_phone_number, talk_secs)
) STRICT, WITHOUT ROWID;

-- A group's row is deleted (DELETE ... calls = 1) or decremented (the
-- UPDATE then finds it) when a settled row stops counting in it.
CREATE TRIGGER phone_calls_results_rollup_insert AFTER INSERT ON phone_calls
WHEN NEW.settled
BEGIN
    INSERT INTO results_hourly (widget_id, hour, state, funnel_stage, calls)
        SELECT NEW.widget_id, substr(NEW.created_at, 1, 13), NEW.state, COALESCE(NEW.funnel_stage, 1), 1 WHERE 1
        ON CONFLICT (widget_id, hour, state, funnel_stage) DO UPDATE SET calls = calls + 1;
    INSERT INTO results_target_hourly (widget_id, hour, target_name, to_phone_number,
            calls, connected, completed, talk_secs)
        SELECT NEW.widget_id, substr(NEW.created_at, 1, 13), NEW.target_name, NEW.to_phone_number, 1,
            COALESCE(NEW.funnel_stage, 1) >= 5, NEW.state = 'completed', COALESCE(NEW.connected_secs, 0)
        WHERE 1
        ON CONFLICT (widget_id, hour, target_name, to_phone_number) DO UPDATE SET
            calls = calls + 1, connected = connected + excluded.connected,
            completed = completed + excluded.completed, talk_secs = talk_secs + excluded.talk_secs;
    INSERT INTO results_talk_hourly (widget_id, hour, target_name, to_phone_number,
            talk_secs, calls)
        SELECT NEW.widget_id, substr(NEW.created_at, 1, 13), NEW.target_name, NEW.to_phone_number, NEW.connected_secs, 1
        WHERE 1 AND NEW.connected_secs IS NOT NULL
        ON CONFLICT (widget_id, hour, target_name, to_phone_number, talk_secs)
        DO UPDATE SET calls = calls + 1;
END;

CREATE TRIGGER phone_calls_results_rollup_delete AFTER DELETE ON phone_calls
WHEN OLD.settled
BEGIN
    DELETE FROM results_hourly WHERE 1 AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND state = OLD.state AND funnel_stage = COALESCE(OLD.funnel_stage, 1) AND calls = 1;
    UPDATE results_hourly SET calls = calls - 1 WHERE 1 AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND state = OLD.state AND funnel_stage = COALESCE(OLD.funnel_stage, 1);
    DELETE FROM results_target_hourly WHERE 1 AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number AND calls = 1;
    UPDATE results_target_hourly SET calls = calls - 1,
        connected = connected - (COALESCE(OLD.funnel_stage, 1) >= 5), completed = completed - (OLD.state = 'completed'),
        talk_secs = talk_secs - COALESCE(OLD.connected_secs, 0)
        WHERE 1 AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number;
    DELETE FROM results_talk_hourly WHERE 1 AND OLD.connected_secs IS NOT NULL AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number AND talk_secs = OLD.connected_secs AND calls = 1;
    UPDATE results_talk_hourly SET calls = calls - 1 WHERE 1 AND OLD.connected_secs IS NOT NULL AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number AND talk_secs = OLD.connected_secs;
END;

-- Only when a settled row's projected values (or settled itself) change.
CREATE TRIGGER phone_calls_results_rollup_update AFTER UPDATE ON phone_calls
WHEN (OLD.settled OR NEW.settled) AND (OLD.settled IS NOT NEW.settled
    OR OLD.widget_id IS NOT NEW.widget_id OR OLD.created_at IS NOT NEW.created_at
    OR OLD.state IS NOT NEW.state OR OLD.funnel_stage IS NOT NEW.funnel_stage
    OR OLD.target_name IS NOT NEW.target_name OR OLD.to_phone_number IS NOT NEW.to_phone_number
    OR OLD.connected_secs IS NOT NEW.connected_secs)
BEGIN
    DELETE FROM results_hourly WHERE OLD.settled AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND state = OLD.state AND funnel_stage = COALESCE(OLD.funnel_stage, 1) AND calls = 1;
    UPDATE results_hourly SET calls = calls - 1 WHERE OLD.settled AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND state = OLD.state AND funnel_stage = COALESCE(OLD.funnel_stage, 1);
    DELETE FROM results_target_hourly WHERE OLD.settled AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number AND calls = 1;
    UPDATE results_target_hourly SET calls = calls - 1,
        connected = connected - (COALESCE(OLD.funnel_stage, 1) >= 5), completed = completed - (OLD.state = 'completed'),
        talk_secs = talk_secs - COALESCE(OLD.connected_secs, 0)
        WHERE OLD.settled AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number;
    DELETE FROM results_talk_hourly WHERE OLD.settled AND OLD.connected_secs IS NOT NULL AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number AND talk_secs = OLD.connected_secs AND calls = 1;
    UPDATE results_talk_hourly SET calls = calls - 1 WHERE OLD.settled AND OLD.connected_secs IS NOT NULL AND widget_id = OLD.widget_id AND hour = substr(OLD.created_at, 1, 13) AND target_name = OLD.target_name AND to_phone_number = OLD.to_phone_number AND talk_secs = OLD.connected_secs;
    INSERT INTO results_hourly (widget_id, hour, state, funnel_stage, calls)
        SELECT NEW.widget_id, substr(NEW.created_at, 1, 13), NEW.state, COALESCE(NEW.funnel_stage, 1), 1 WHERE NEW.settled
        ON CONFLICT (widget_id, hour, state, funnel_stage) DO UPDATE SET calls = calls + 1;
    INSERT INTO results_target_hourly (widget_id, hour, target_name, to_phone_number,
            calls, connected, completed, talk_secs)
        SELECT NEW.widget_id, substr(NEW.created_at, 1, 13), NEW.target_name, NEW.to_phone_number, 1,
            COALESCE(NEW.funnel_stage, 1) >= 5, NEW.state = 'completed', COALESCE(NEW.connected_secs, 0)
        WHERE NEW.settled
        ON CONFLICT (widget_id, hour, target_name, to_phone_number) DO UPDATE SET
            calls = calls + 1, connected = connected + excluded.connected,
            completed = completed + excluded.completed, talk_secs = talk_secs + excluded.talk_secs;
    INSERT INTO results_talk_hourly (widget_id, hour, target_name, to_phone_number,
            talk_secs, calls)
        SELECT NEW.widget_id, substr(NEW.created_at, 1, 13), NEW.target_name, NEW.to_phone_number, NEW.connected_secs, 1
        WHERE NEW.settled AND NEW.connected_secs IS NOT NULL
        ON CONFLICT (widget_id, hour, target_name, to_phone_number, talk_secs)
        DO UPDATE SET calls = calls + 1;
END;

-- Backfill from the settled rows.
INSERT INTO results_hourly (widget_id, hour, state, funnel_stage, calls)
SELECT widget_id, substr(created_at, 1, 13), state, COALESCE(funnel_stage, 1), COUNT(*)
FROM phone_calls WHERE settled GROUP BY 1, 2, 3, 4;

INSERT INTO results_target_hourly (widget_id, hour, target_name, to_phone_number, calls,
    connected, completed, talk_secs)
SELECT widget_id, substr(created_at, 1, 13), target_name, to_phone_number, COUNT(*),
    COALESCE(SUM(funnel_stage >= 5), 0), SUM(state = 'completed'),
    COALESCE(SUM(connected_secs), 0)
FROM phone_calls WHERE settled GROUP BY 1, 2, 3, 4;

INSERT INTO results_talk_hourly (widget_id, hour, target_name, to_phone_number, talk_secs,
    calls)
SELECT widget_id, substr(created_at, 1, 13), target_name, to_phone_number, connected_secs,
    COUNT(*)
FROM phone_calls WHERE settled AND connected_secs IS NOT NULL GROUP BY 1, 2, 3, 4, 5;

-- The report reads the unsettled calls of the rollup's hours from the rows.
CREATE INDEX phone_calls_results_unsettled_idx ON phone_calls (widget_id, created_at)
    WHERE settled = 0;
