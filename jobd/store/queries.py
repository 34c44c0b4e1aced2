"""Every SQL statement jobd runs on its tables, by name, in one place.

A statement is written once with `?` placeholders and the words that differ
between the backends in braces: `{now}` (the transaction's clock, fixed while
it lasts on PostgreSQL, for the statement on SQLite) and `{clock}` (the clock
where the statement is evaluated, after any lock wait). Where the backends
need different text altogether, the PostgreSQL text is given beside it.
`{in}` stays in the text: the runner fills it with one placeholder per value
of an IN list (jobd.store.dialect), in chunks.

The Store runs these through peewee's connection, the fast Reader through the
bare DB-API driver: one text for both, so a history read means the same
whichever path serves it. Peewee's models remain for the schema and its
migrations (jobd.store.schema), and for tests that set rows up.

No driver, ORM or model import here: `jobd executions` loads this module.
The run keys (jobd.core.records) are the executions columns that command reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from jobd.core.records import DETAIL_KEYS, RUN_KEYS

# Stored times are naive UTC. 'now' is fixed for the whole statement on SQLite,
# like now() for the transaction on PostgreSQL.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now')"
_WORDS = {
    "sqlite": {"now": _SQLITE_NOW, "clock": _SQLITE_NOW},
    "postgresql": {
        "now": "(now() AT TIME ZONE 'utc')",
        # clock_timestamp(), not now(): now() is frozen at the start of the
        # transaction, so a claim that waited for a lock would record a start
        # before the end of the run it waited for.
        "clock": "(clock_timestamp() AT TIME ZONE 'utc')",
    },
}
# Filled when the statement runs: an IN list's placeholders, or the claim's moment.
_LATER = {"in": "{in}", "final": "{final}", "moment": "{moment}", "doomed": "{doomed}"}


class Query(NamedTuple):
    sqlite: str
    postgresql: str

    def text(self, backend: str) -> str:
        return self.sqlite if backend == "sqlite" else self.postgresql


# Each backend's words and the ones filled later, merged once: `jobd executions`
# imports this module, so its hundred-odd statements are built at every start.
_FILL = {backend: {**words, **_LATER} for backend, words in _WORDS.items()}


def query(text: str, postgresql: str | None = None) -> Query:
    pg = (postgresql or text).replace("?", "%s")
    return Query(text.format_map(_FILL["sqlite"]), pg.format_map(_FILL["postgresql"]))


# The schema version these statements are written for: migrations.py brings a
# store to it (MIGRATIONS[:SCHEMA_VERSION] have run), and the fast Reader reads
# only a store at it. 2 added jobs.group_name, 3 made strings text, 4 added
# api_tokens, 5 added job_successes (read by JOB_GAUGES), 6 the executions
# (status, id) index that claims walk (CLAIM_CANDIDATES).
SCHEMA_VERSION = 6

# -- column lists -------------------------------------------------------------------

# Every column of the executions table, which are also the fields of model.Run.
EXECUTION_COLUMNS = RUN_KEYS + DETAIL_KEYS
# What a waiting `trigger --wait` or `logs --follow` polls; the log only on change.
STATE_COLUMNS = (
    "id",
    "job",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "exit_code",
    "signal",
    "error",
    "log_bytes",
)
# The jobs-table columns a JobRecord is made of, in its order.
JOB_COLUMNS = ("spec", "paused", "removed", "next_fire_at", "last_fire_at", "updated_at")
# The jobs-table columns that follow from a spec (Store writes them together).
DEFINITION_COLUMNS = (
    "source",
    "spec",
    "config_hash",
    "schedule",
    "timezone",
    "overlap",
    "enabled",
    "group_name",
    "next_fire_at",
    "updated_at",
)
NEW_JOB_COLUMNS = ("name", "created_at", "paused", "removed", *DEFINITION_COLUMNS)
# A run as written when it is queued (or recorded final at once, as a skip).
NEW_RUN_COLUMNS = (
    "job",
    "trigger",
    "scheduled_for",
    "queued_at",
    "not_before",
    "status",
    "attempt",
    "retry_of",
    "triggered_by",
    "error",
    "finished_at",
    "epoch",
    "cancel_requested",
    "log",
    "log_bytes",
)
INSTANCE_COLUMNS = (
    "id",
    "host",
    "pid",
    "version",
    "started_at",
    "heartbeat_at",
    "role",
    "running",
    "clock_skew",
    "stopped_at",
)
AUDIT_COLUMNS = ("id", "at", "action", "actor", "target", "detail")


def _list(columns: tuple[str, ...], prefix: str = "") -> str:
    return ", ".join(f'{prefix}"{c}"' for c in columns)


def _marks(columns: tuple[str, ...]) -> str:
    return ", ".join("?" for _ in columns)


# -- the clock ------------------------------------------------------------------------

CLOCK = query("SELECT {clock}")
NOW = query("SELECT {now}")
# The transaction's clock as an expression, for a statement's `{moment}`.
NOW_EXPRESSION = query("{now}")

# -- jobs ---------------------------------------------------------------------------------

JOBS = query(f"SELECT {_list(JOB_COLUMNS)} FROM jobs ORDER BY name")
JOBS_LISTED = query(f"SELECT {_list(JOB_COLUMNS)} FROM jobs WHERE NOT removed ORDER BY name")
JOB = query(f"SELECT {_list(JOB_COLUMNS)} FROM jobs WHERE name = ?")
# What apply_config compares, row by row, with the config file's jobs.
JOBS_TO_APPLY = query("SELECT name, source, config_hash, removed, spec FROM jobs")
JOB_INSERT = query(
    f"INSERT INTO jobs ({_list(NEW_JOB_COLUMNS)}) VALUES ({_marks(NEW_JOB_COLUMNS)})"
)
JOB_INSERT_IF_NEW = query(
    f"INSERT INTO jobs ({_list(NEW_JOB_COLUMNS)}) VALUES ({_marks(NEW_JOB_COLUMNS)}) "
    "ON CONFLICT DO NOTHING"
)
JOB_REDEFINE = query(
    f"UPDATE jobs SET removed = ?, {', '.join(f'{c} = ?' for c in DEFINITION_COLUMNS)} "
    "WHERE name = ?"
)
JOB_REMOVE = query(
    "UPDATE jobs SET removed = ?, next_fire_at = NULL, updated_at = ? WHERE name = ?"
)
JOB_PAUSE = query("UPDATE jobs SET paused = ?, updated_at = ? WHERE name = ?")
JOB_RESUME = query("UPDATE jobs SET paused = ?, updated_at = ?, next_fire_at = ? WHERE name = ?")
JOB_SPEC = query("SELECT spec FROM jobs WHERE name = ?")
JOB_SPECS = query("SELECT name, spec FROM jobs WHERE name IN ({in})")
DUE_JOBS = query(
    "SELECT spec, paused, removed, next_fire_at, last_fire_at, updated_at, {clock} FROM jobs "
    "WHERE next_fire_at IS NOT NULL AND next_fire_at <= ? "
    "AND NOT paused AND NOT removed AND enabled ORDER BY next_fire_at LIMIT ?"
)
NEXT_FIRE = query(
    "SELECT MIN(next_fire_at) FROM jobs WHERE next_fire_at IS NOT NULL "
    "AND NOT paused AND NOT removed AND enabled"
)
# The first two parameters are the queued and running statuses.
ACTIVE_RUNS_OF = query(
    "SELECT DISTINCT e.job, e.status, e.instance, i.heartbeat_at, i.stopped_at "
    "FROM executions e LEFT JOIN instances i ON i.id = e.instance "
    "WHERE e.status IN (?, ?) AND e.job IN ({in})"
)
# This transaction's fires of jobs paused or removed since the due read: found
# through the jobs' key and the executions' job index, never by a scan.
UNFIRE_PAUSED = query(
    "DELETE FROM executions WHERE job IN (SELECT name FROM jobs "
    "WHERE name IN ({in}) AND (paused OR removed)) "
    "AND queued_at = ? AND trigger IN (?, ?)"
)
ADVANCE = query("UPDATE jobs SET next_fire_at = ?, last_fire_at = ? WHERE name = ?")
ADVANCE_ALL = query("UPDATE jobs SET next_fire_at = ?, last_fire_at = ? WHERE name IN ({in})")
CANCEL_RUNNING_OF = query(
    "UPDATE executions SET cancel_requested = ? WHERE status = ? AND job IN ({in})"
)

# -- runs ------------------------------------------------------------------------------

RUN = query(f"SELECT {_list(EXECUTION_COLUMNS)} FROM executions WHERE id = ?")
RUN_INSERT = query(
    f"INSERT INTO executions ({_list(NEW_RUN_COLUMNS)}) VALUES ({_marks(NEW_RUN_COLUMNS)}) "
    "RETURNING id"
)
RUNS_INSERT = query(
    f"INSERT INTO executions ({_list(NEW_RUN_COLUMNS)}) VALUES ({_marks(NEW_RUN_COLUMNS)})"
)
# Fires: a slot already recorded is ignored (the (job, scheduled_for) key).
FIRES_INSERT = query(
    f"INSERT OR IGNORE INTO executions ({_list(NEW_RUN_COLUMNS)}) "
    f"VALUES ({_marks(NEW_RUN_COLUMNS)})",
    # execute_values fills the one %s with the rows' values.
    f"INSERT INTO executions ({_list(NEW_RUN_COLUMNS)}) VALUES ? "
    "ON CONFLICT DO NOTHING RETURNING id",
)
SET_PID = query("UPDATE executions SET pid = ? WHERE id = ?")
SET_LOG = query("UPDATE executions SET log = ?, log_bytes = ? WHERE id = ?")
ENDING = query("SELECT id, status, instance, started_at FROM executions WHERE id IN ({in})")
# Many ends at once, each only if its instance still runs it: the condition is
# in the UPDATE itself, so a concurrent abandon or cancel cannot be overwritten.
END_RUNS = query(
    "UPDATE executions SET status = ?, exit_code = ?, signal = ?, error = ?, "
    "finished_at = ?, duration_s = ? WHERE id = ? AND status = 'running' AND instance = ?",
    "UPDATE executions AS e SET status = v.status, exit_code = v.exit_code, "
    "signal = v.signal, error = v.error, finished_at = v.finished_at, "
    "duration_s = v.duration_s FROM (VALUES ?) AS v(id, instance, status, "
    "exit_code, signal, error, finished_at, duration_s) "
    "WHERE e.id = v.id AND e.status = 'running' AND e.instance = v.instance "
    "RETURNING e.id",
)
END_RUNS_ROW = (
    "(%s::integer, %s::text, %s::text, %s::integer, %s::integer, %s::text, "
    "%s::timestamp, %s::double precision)"
)
NEXT_QUEUED = query("SELECT MIN(not_before), {now} FROM executions WHERE status = ?")
# Claims. `{moment}` is the instant runs are due by: a parameter, or the clock.
CLAIMABLE = query("SELECT 1 FROM executions WHERE status = ? AND not_before <= {moment} LIMIT 1")
# The queue in id order by the (status, id) index, so a claim stops after the rows it
# takes: through (status, not_before) it sorted every due queued run first, a cost
# that grew with the queue (2 ms at 6,000 queued runs, against 0.05 ms). SQLite is
# told the index: without ANALYZE statistics its planner picks the other one.
CLAIM_CANDIDATES = query(
    f"SELECT j.overlap, j.config_hash, c.now, {_list(EXECUTION_COLUMNS, 'e.')} "
    "FROM executions e INDEXED BY executions_status_id "
    "JOIN jobs j ON j.name = e.job CROSS JOIN (SELECT {clock} AS now) c "
    "WHERE e.status = ? AND e.not_before <= {moment} ORDER BY e.id LIMIT ?",
    f"SELECT j.overlap, j.config_hash, c.now, {_list(EXECUTION_COLUMNS, 'e.')} FROM executions e "
    "JOIN jobs j ON j.name = e.job CROSS JOIN (SELECT {clock} AS now) c "
    "WHERE e.status = ? AND e.not_before <= {moment} ORDER BY e.id LIMIT ? "
    "FOR UPDATE OF e SKIP LOCKED",
)
# PostgreSQL: serializes claimers of the same exclusive jobs across instances,
# locking in name order as fires do.
LOCK_JOBS = query("SELECT name FROM jobs WHERE name = ANY(?) ORDER BY name FOR UPDATE")
RUNNING_JOBS = query("SELECT DISTINCT job FROM executions WHERE status = ? AND job IN ({in})")
RUNNING_JOBS_AND_CLOCK = query(
    "SELECT {clock}, ARRAY(SELECT DISTINCT job FROM executions WHERE status = ? AND job = ANY(?))"
)
CLAIM = query(
    "UPDATE executions SET status = ?, started_at = ?, instance = ?, host = ?, "
    "config_hash = ? WHERE id = ? AND status = ?"
)
CLAIM_ONE_READ = query(
    "SELECT j.spec FROM executions e JOIN jobs j ON j.name = e.job WHERE e.id = ? AND e.status = ?"
)
CLAIM_ONE = query(
    "UPDATE executions SET status = ?, started_at = ?, not_before = ?, instance = ?, host = ?, "
    "config_hash = ? WHERE id = ? AND status = ?"
)
TO_STOP = query("SELECT id, status, instance, cancel_requested FROM executions WHERE id IN ({in})")
RUN_STATUS = query("SELECT status FROM executions WHERE id = ?")
CANCEL_QUEUED = query(
    "UPDATE executions SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status = ?"
)
FLAG_CANCEL = query("UPDATE executions SET cancel_requested = ? WHERE id = ? AND status = ?")
QUEUE_DEPTH = query("SELECT COUNT(*) FROM executions WHERE status = ?")
LAST_STATUS = query("SELECT status FROM executions WHERE job = ? ORDER BY id DESC LIMIT 1")

# -- history (the fast Reader, and Store.executions through it) ------------------------

# Newest first: see runs_page().
RUNS_PAGE = query("SELECT {{columns}} FROM executions{{where}} ORDER BY id DESC{{limit}}")
RUN_FILTERS = {
    "run": query("id = ?"),
    "job": query("job = ?"),
    "jobs": query("job IN ({in})"),
    "before": query("id < ?"),
    "statuses": query("status IN ({in})"),
    "since": query("queued_at >= ?"),
}


def runs_page(
    backend: str,
    columns: Sequence[str],
    filters: Sequence[tuple[str, Any]],
    limit: int | None,
) -> tuple[str, list[Any]]:
    """RUNS_PAGE with `columns` (from the lists above) and `filters`, pairs of a
    RUN_FILTERS name and its value (a sequence for an IN list): the text and its
    parameters, for the Store and the Reader alike."""
    param = "?" if backend == "sqlite" else "%s"
    where, params = [], []
    for name, value in filters:
        text = RUN_FILTERS[name].text(backend)
        if "{in}" in text:
            text = text.replace("{in}", ", ".join([param] * len(value)))
            params.extend(value)
        else:
            params.append(value)
        where.append(text)
    sql = RUNS_PAGE.text(backend).format(
        columns=_list(tuple(columns)),
        where=" WHERE " + " AND ".join(where) if where else "",
        limit=f" LIMIT {int(limit)}" if limit else "",
    )
    return sql, params


RUN_STATE = query(f"SELECT {_list(STATE_COLUMNS)} FROM executions WHERE id = ?")
RUN_LOG = query("SELECT log, log_bytes FROM executions WHERE id = ?")
SCHEMA_VERSION_READ = query("SELECT MAX(version) FROM jobd_schema")
# SQLite: moves when another connection commits, without reading a page.
DATA_VERSION = query("PRAGMA data_version")
JOB_EXISTS = query("SELECT 1 FROM jobs WHERE name = ?")
JOB_NAMES = query("SELECT name FROM jobs ORDER BY name")

# -- operators' queries (admin.py) --------------------------------------------------------

INSTANCES_SEEN = query(
    f"SELECT {_list(INSTANCE_COLUMNS)} FROM instances "
    "WHERE heartbeat_at >= ? OR stopped_at IS NULL ORDER BY heartbeat_at DESC"
)
LAST_HEARTBEAT = query("SELECT MAX(heartbeat_at) FROM instances")
LEASE_COLUMNS = ("name", "holder", "host", "epoch", "acquired_at", "expires_at")
LEASES = query(f"SELECT {_list(LEASE_COLUMNS)} FROM leader_lease ORDER BY name")
# Jobs that will fire: not paused, removed or disabled.
UPCOMING = query(
    "SELECT name, next_fire_at, timezone FROM jobs WHERE NOT paused AND NOT removed AND enabled "
    "AND next_fire_at IS NOT NULL ORDER BY next_fire_at, name LIMIT ?"
)
OVERDUE = query(
    "SELECT name, next_fire_at FROM jobs WHERE NOT paused AND NOT removed AND enabled "
    "AND next_fire_at < ? ORDER BY next_fire_at"
)
# Each job's newest run (of the four statuses given that say how its work went),
# by a backward walk of the (job, id) index per job; then those runs
# by their primary key.
NEWEST_OF = query(
    "SELECT j.name, (SELECT x.id FROM executions x WHERE x.job = j.name "
    "ORDER BY x.id DESC LIMIT 1) FROM jobs j WHERE j.name IN ({in})"
)
NEWEST_OUTCOME_OF = query(
    "SELECT j.name, (SELECT x.id FROM executions x WHERE x.job = j.name "
    "AND x.status IN (?, ?, ?, ?) "
    "ORDER BY x.id DESC LIMIT 1) FROM jobs j WHERE j.name IN ({in})"
)
OUTCOME_ROWS = query("SELECT id, status, finished_at, exit_code FROM executions WHERE id IN ({in})")
LATEST_ROWS = query("SELECT id, status, started_at, queued_at FROM executions WHERE id IN ({in})")

# -- retention (admin.prune, groups.prune_retained) ------------------------------------------

# The jobs among {in} with at least one run: one indexed probe per job.
JOBS_WITH_RUNS = query(
    "SELECT name FROM jobs WHERE name IN ({in}) "
    "AND EXISTS (SELECT 1 FROM executions WHERE executions.job = jobs.name)"
)
# The newest final run beyond the `keep` newest (OFFSET keep): it and older ones go.
KEEP_BOUND = query(
    "SELECT id FROM executions WHERE job = ? AND status IN ({in}) ORDER BY id DESC LIMIT 1 OFFSET ?"
)
# Ids grow with queue time, so the first run queued after the cutoff bounds the
# old ones; finished_at keeps the test exact (a run queued long ago that finished
# recently stays). A run queued out of order across hosts is caught next time.
FIRST_SINCE = query(
    "SELECT id FROM executions WHERE job = ? AND queued_at >= ? ORDER BY id LIMIT 1"
)
GROUP_BOUND = query(
    "SELECT id FROM executions WHERE job IN (SELECT name FROM jobs WHERE group_name = ?) "
    "AND status IN ({in}) ORDER BY id DESC LIMIT 1 OFFSET ?"
)
# Which runs a prune deletes: `{doomed}` in the statements below is one of these,
# each with its own parameters and {in} the final statuses. A NULL bound matches
# nothing: a job with fewer than `keep` final runs, or no cutoff.
DOOMED_OF_JOB = query(
    "job = ? AND status IN ({in}) AND (id <= ? OR (finished_at < ? AND (? IS NULL OR id < ?)))"
)
DOOMED_OF_GROUP = query(
    "job IN (SELECT name FROM jobs WHERE group_name = ?) AND status IN ({in}) AND id <= ?"
)
DOOMED_COUNT = query("SELECT COUNT(*) FROM executions WHERE {doomed}")
DOOMED_BY_JOB = query("SELECT job, COUNT(*) FROM executions WHERE {doomed} GROUP BY job")
# Deletes go in id ranges of a batch each, one short transaction a range.
DOOMED_RANGE_END = query(
    "SELECT id FROM executions WHERE id > ? AND {doomed} ORDER BY id LIMIT 1 OFFSET ?"
)
DELETE_RANGE = query("DELETE FROM executions WHERE id > ? AND id <= ? AND {doomed}")
DELETE_REST = query("DELETE FROM executions WHERE id > ? AND {doomed}")

# -- group quotas (groups.py) ------------------------------------------------------------------

# {in} is the groups; the two parameters before it the active statuses.
ACTIVE_BY_GROUP = query(
    "SELECT j.group_name, COUNT(e.id) FROM executions e JOIN jobs j ON j.name = e.job "
    "WHERE e.status IN (?, ?) AND j.group_name IN ({in}) GROUP BY j.group_name"
)
GROUP_JOBS = query("SELECT COUNT(*) FROM jobs WHERE group_name = ? AND NOT removed")
GROUP_JOBS_BUT = query(
    "SELECT COUNT(*) FROM jobs WHERE group_name = ? AND NOT removed AND name <> ?"
)
JOBS_BY_GROUP = query(
    "SELECT group_name, COUNT(name) FROM jobs WHERE NOT removed AND group_name IN ({in}) "
    "GROUP BY group_name"
)
# {in} is the groups, then the final statuses (the runner expands both).
RETAINED_BY_GROUP = query(
    "SELECT j.group_name, COUNT(e.id) FROM executions e JOIN jobs j ON j.name = e.job "
    "WHERE j.group_name IN ({in}) AND e.status IN ({final}) GROUP BY j.group_name"
)

# -- API tokens (jobd.ops.tokens) --------------------------------------------------------------

TOKEN_COLUMNS = (
    "name",
    "key_id",
    "secret_hash",
    "group_name",
    "read_only",
    "created_at",
    "created_by",
    "expires_at",
)
TOKEN_INSERT = query(
    f"INSERT INTO api_tokens ({_list(TOKEN_COLUMNS)}) VALUES ({_marks(TOKEN_COLUMNS)})"
)
TOKEN = query(f"SELECT {_list(TOKEN_COLUMNS)} FROM api_tokens WHERE name = ?")
TOKEN_BY_KEY = query(f"SELECT {_list(TOKEN_COLUMNS)} FROM api_tokens WHERE key_id = ?")
TOKENS = query(f"SELECT {_list(TOKEN_COLUMNS)} FROM api_tokens ORDER BY name")
TOKEN_DELETE = query("DELETE FROM api_tokens WHERE name = ?")

# -- a metrics scrape (gauges.py) -----------------------------------------------------

# Each job's last success from job_successes (kept by a trigger on executions:
# migrations.py, version 5), not from the history. Times come back as integer Unix
# milliseconds computed by the database: converting 20,000 stored times in Python took
# longer than the query, and psycopg2 reads an integer for less than a float (at
# 10,000 jobs two float8 columns cost it 4 to 5 ms more CPU per scrape, the server the
# same either way); seconds are divided out only for a line that is written anew
# (metrics.py). Stored times are naive UTC: SQLite's julianday reads them as UTC, and
# PostgreSQL's date_part('epoch') reads a timestamp without time zone as UTC. Rounded
# by arithmetic: SQLite's round() formats and parses text, which cost a third of the
# statement; PostgreSQL's EXTRACT gives numeric where date_part gives float8. No ORDER
# BY: the text format needs no order, and SQLite would read the table through its name
# index.
JOB_GAUGES = query(
    "SELECT j.name, j.paused OR NOT j.enabled, "
    "CAST((julianday(j.next_fire_at) - 2440587.5) * 86400000.0 + 0.5 AS INTEGER), "
    "CAST((julianday(s.finished_at) - 2440587.5) * 86400000.0 + 0.5 AS INTEGER) "
    "FROM jobs j LEFT JOIN job_successes s ON s.job = j.name WHERE j.removed = ?",
    "SELECT j.name, j.paused OR NOT j.enabled, "
    "CAST(round(date_part('epoch', j.next_fire_at) * 1000) AS bigint), "
    "CAST(round(date_part('epoch', s.finished_at) * 1000) AS bigint) "
    "FROM jobs j LEFT JOIN job_successes s ON s.job = j.name WHERE j.removed = ?",
)
ACTIVE_COUNTS = query(
    "SELECT status, COUNT(*) FROM executions WHERE status IN (?, ?) GROUP BY status"
)

# -- instances and lost runs -------------------------------------------------------------

INSTANCE_REGISTER = query(
    "INSERT INTO instances (id, host, pid, version, started_at, heartbeat_at, role, running) "
    "VALUES (?, ?, ?, ?, ?, ?, 'standby', 0) ON CONFLICT (id) DO UPDATE SET "
    "heartbeat_at = excluded.heartbeat_at, stopped_at = NULL, pid = excluded.pid"
)
# Dated by the database in the same statement: one round trip, not two.
HEARTBEAT = query(
    "UPDATE instances SET heartbeat_at = {now}, role = ?, running = ?, clock_skew = ? WHERE id = ?"
)
TOUCH = query("UPDATE instances SET heartbeat_at = {now} WHERE id = ?")
INSTANCE_STOP = query(
    "UPDATE instances SET stopped_at = ?, role = 'stopped', running = 0 WHERE id = ?"
)
INSTANCES_STOP = query(
    "UPDATE instances SET stopped_at = ?, role = 'stopped', running = 0 "
    "WHERE stopped_at IS NULL AND id IN ({in})"
)
INSTANCE_REMOVE = query("DELETE FROM instances WHERE id = ?")
INSTANCES = query(f"SELECT {_list(INSTANCE_COLUMNS)} FROM instances ORDER BY started_at")
INSTANCE_WHERE = query("SELECT host, pid FROM instances WHERE id = ?")
NOT_STOPPED = query("SELECT id, heartbeat_at FROM instances WHERE stopped_at IS NULL")
ANY_RUNNING = query("SELECT 1 FROM executions WHERE status = ? LIMIT 1")
RUNNING = query(f"SELECT {_list(EXECUTION_COLUMNS)} FROM executions WHERE status = ? ORDER BY id")
ABANDON = query(
    "UPDATE executions SET status = ?, error = ?, finished_at = ?, duration_s = ? "
    "WHERE id = ? AND status = ?"
)

# -- audit -------------------------------------------------------------------------------

AUDIT = query("INSERT INTO audit_events (at, action, actor, target, detail) VALUES (?, ?, ?, ?, ?)")
AUDIT_EVENTS = query(f"SELECT {_list(AUDIT_COLUMNS)} FROM audit_events ORDER BY id DESC LIMIT ?")
AUDIT_EVENTS_OF = query(
    f"SELECT {_list(AUDIT_COLUMNS)} FROM audit_events WHERE target IN ({{in}}) "
    "ORDER BY id DESC LIMIT ?"
)

# -- notifications (notices.py) -----------------------------------------------------------

# The job's latest outcome that says whether it works (four statuses), before a run.
PREVIOUS_OUTCOME = query(
    "SELECT status FROM executions WHERE job = ? AND id < ? AND status IN (?, ?, ?, ?) "
    "ORDER BY id DESC LIMIT 1"
)
DELIVERIES = query(
    "SELECT at, action, detail FROM audit_events WHERE target = ? AND action IN (?, ?) "
    "ORDER BY id DESC LIMIT ?"
)

# -- the leader lease ----------------------------------------------------------------------

LEASE_NAME = "scheduler"
# Takes the lease if it is free or expired, or renews it for its holder; the
# database decides, and computes the expiry by its own clock.
LEASE_TAKE = query(
    "UPDATE leader_lease SET "
    "epoch = CASE WHEN holder = ? THEN epoch ELSE epoch + 1 END, "
    "acquired_at = CASE WHEN holder = ? THEN acquired_at ELSE {now} END, "
    "holder = ?, host = ?, "
    "expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '+' || ? || ' seconds') "
    "WHERE name = ? AND (holder = ? OR holder IS NULL OR expires_at < {now}) "
    "RETURNING epoch, holder, expires_at, {now}",
    "UPDATE leader_lease SET "
    "epoch = CASE WHEN holder = ? THEN epoch ELSE epoch + 1 END, "
    "acquired_at = CASE WHEN holder = ? THEN acquired_at ELSE {now} END, "
    "holder = ?, host = ?, expires_at = ({now} + ? * interval '1 second') "
    "WHERE name = ? AND (holder = ? OR holder IS NULL OR expires_at < {now}) "
    "RETURNING epoch, holder, expires_at, {now}",
)
LEASE_CREATE = query("INSERT INTO leader_lease (name, epoch) VALUES (?, 0) ON CONFLICT DO NOTHING")
LEASE_STATE = query("SELECT epoch, holder, expires_at, {now} FROM leader_lease WHERE name = ?")
LEASE_RELEASE = query(
    "UPDATE leader_lease SET holder = NULL, expires_at = NULL WHERE name = ? AND holder = ?"
)
# The clock, not the transaction's start: judged when the row lock is ours.
LEASE_CHECK = query(
    "SELECT epoch, expires_at > {clock}, {clock} FROM leader_lease WHERE name = ?",
    "SELECT epoch, expires_at > {clock}, {clock} FROM leader_lease WHERE name = ? FOR UPDATE",
)

# -- locks (PostgreSQL; SQLite's write transactions are serialized already) ----------------

ADVISORY_LOCK = query("SELECT pg_advisory_xact_lock(?)")
# Not waiting for the flush to disk (see Store.record_fires).
RELAXED_COMMIT = query("SET LOCAL synchronous_commit = off")
# The payload names the schema, so jobd stores in other schemas of the same
# database (NOTIFY is database-wide) are not woken for nothing.
NOTIFY = query("SELECT pg_notify(?, current_schema())")
WAKE_CHANNEL = "jobd_wake"
