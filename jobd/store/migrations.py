"""Forward-only, numbered schema migrations.

Version N of the store means MIGRATIONS[:N] have run. A store whose version is
higher than len(MIGRATIONS) was written by a newer jobd: it is refused and never
modified.
"""

from __future__ import annotations

from collections.abc import Callable

import peewee as pw

from jobd.errors import StoreTooNew, StoreUnavailable
from jobd.store.queries import SCHEMA_VERSION
from jobd.store.schema import Models

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "check_not_newer", "current_version", "migrate"]


def _initial(db: pw.Database, models: Models) -> None:
    db.create_tables([m for m in models.all() if m is not models.Schema])


def _job_groups(db: pw.Database, models: Models) -> None:
    """2: jobs.group_name, for [groups.NAME] quotas. A store created at version 2 or
    later already has it (_initial builds today's models), so only add what is missing."""
    # Imported when a migration runs: playhouse.migrate loads every backend's
    # extensions and their drivers.
    from playhouse.migrate import SchemaMigrator
    from playhouse.migrate import migrate as apply_operations

    migrator = SchemaMigrator.from_database(db)
    operations = []
    if "group_name" not in {column.name for column in db.get_columns("jobs")}:
        field = pw.TextField(null=True)
        operations.append(migrator.add_column("jobs", "group_name", field))
    if not any(index.columns == ["group_name"] for index in db.get_indexes("jobs")):
        operations.append(migrator.add_index("jobs", ("group_name",), False))
    apply_operations(*operations)


def _text_columns(db: pw.Database, models: Models) -> None:
    """3: every varchar(N) column becomes text. The limits were arbitrary, and a valid
    config exceeded them: a 56-character host name made an instance id too long for
    varchar(64), a 237-character schedule too long for varchar(200). PostgreSQL only:
    SQLite never enforced them. varchar to text needs no rewrite of the table or its
    indexes, so this is quick on a store of any size."""
    if not isinstance(db, pw.PostgresqlDatabase):
        return
    tables = [m._meta.table_name for m in models.all()]
    columns = db.execute_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'character varying' "
        "AND table_name = ANY(%s) ORDER BY table_name, ordinal_position",
        (tables,),
    ).fetchall()
    for table, column in columns:
        db.execute_sql(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE text')


def _api_tokens(db: pw.Database, models: Models) -> None:
    """4: the api_tokens table of the HTTP API's bearer tokens (a store created at
    version 4 or later has it from _initial)."""
    db.create_tables([models.ApiToken], safe=True)


# 5: each job's latest success, kept by the database itself. A metrics scrape
# reads it for every job; finding it in the history took an index walk per job
# (10,000 jobs: 10,000 walks, over 50 ms on either store), where a join with
# this table is one pass. A trigger keeps it rather than the code that finishes
# runs, so that every writer (daemon, `trigger --local`, an old jobd during an
# upgrade) keeps it right. Pruning runs never lowers it.
SUCCESSES_TABLE = (
    "CREATE TABLE IF NOT EXISTS job_successes "
    "(job {text} PRIMARY KEY, finished_at {timestamp} NOT NULL){suffix}"
)
# The newest end wins; a late write of an older success never lowers it.
NEWEST = (
    "ON CONFLICT (job) DO UPDATE SET finished_at = excluded.finished_at "
    "WHERE job_successes.finished_at < excluded.finished_at"
)
SUCCESSES_BACKFILL = (
    "INSERT INTO job_successes (job, finished_at) SELECT job, MAX(finished_at) "
    "FROM executions WHERE status = 'succeeded' AND finished_at IS NOT NULL GROUP BY job " + NEWEST
)
SUCCESS_UPSERT = (
    "INSERT INTO job_successes (job, finished_at) VALUES (NEW.job, NEW.finished_at) " + NEWEST
)
SUCCESS_WHEN = "NEW.status = 'succeeded' AND NEW.finished_at IS NOT NULL"
SQLITE_SUCCESS_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS executions_success_{event.split()[0].lower()} "
    f"AFTER {event} ON executions WHEN {SUCCESS_WHEN} BEGIN {SUCCESS_UPSERT}; END"
    for event in ("INSERT", "UPDATE OF status, finished_at")
]
# On PostgreSQL an INSERT notes its successes once per statement, over its
# transition table: a statement writing many finished runs of one job (a history
# copied in) would otherwise update that job's row once per run, and inside one
# transaction each update walks the row's growing chain of versions (1,000,000 runs
# in one INSERT did not finish in 5 minutes). Ends stay a row trigger with its WHEN:
# most updates of executions (claims, pids, output) do not end a run in success,
# and a statement trigger would copy every updated row, output included.
POSTGRES_SUCCESS_TRIGGER = [
    "CREATE OR REPLACE FUNCTION jobd_note_success() RETURNS trigger LANGUAGE plpgsql "
    f"AS $body$ BEGIN {SUCCESS_UPSERT}; RETURN NULL; END $body$",
    "CREATE OR REPLACE FUNCTION jobd_note_successes() RETURNS trigger LANGUAGE plpgsql "
    "AS $body$ BEGIN INSERT INTO job_successes (job, finished_at) "
    "SELECT job, MAX(finished_at) FROM inserted WHERE status = 'succeeded' "
    "AND finished_at IS NOT NULL GROUP BY job " + NEWEST + "; RETURN NULL; END $body$",
    "DROP TRIGGER IF EXISTS executions_success ON executions",
    "DROP TRIGGER IF EXISTS executions_success_insert ON executions",
    "CREATE TRIGGER executions_success AFTER UPDATE OF status, finished_at "
    f"ON executions FOR EACH ROW WHEN ({SUCCESS_WHEN}) EXECUTE FUNCTION jobd_note_success()",
    "CREATE TRIGGER executions_success_insert AFTER INSERT ON executions "
    "REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT "
    "EXECUTE FUNCTION jobd_note_successes()",
]


def _job_successes(db: pw.Database, models: Models) -> None:
    """5: the job_successes table and the trigger that keeps it, filled from the history.

    The trigger comes first: on PostgreSQL creating it locks out writers of
    executions until this transaction commits, so no success ends between the
    fill and the trigger unseen by both."""
    if isinstance(db, pw.PostgresqlDatabase):
        table = SUCCESSES_TABLE.format(text="text", timestamp="timestamp", suffix="")
        statements = [table, *POSTGRES_SUCCESS_TRIGGER, SUCCESSES_BACKFILL]
    else:
        table = SUCCESSES_TABLE.format(text="TEXT", timestamp="DATETIME", suffix=" WITHOUT ROWID")
        statements = [table, *SQLITE_SUCCESS_TRIGGERS, SUCCESSES_BACKFILL]
    for statement in statements:
        db.execute_sql(statement)


def _claim_order_index(db: pw.Database, models: Models) -> None:
    """6: the executions (status, id) index claims walk (queries.CLAIM_CANDIDATES). A
    store created at version 6 or later already has it from _initial."""
    db.execute_sql("CREATE INDEX IF NOT EXISTS executions_status_id ON executions (status, id)")


MIGRATIONS: list[Callable[[pw.Database, Models], None]] = [
    _initial,
    _job_groups,
    _text_columns,
    _api_tokens,
    _job_successes,
    _claim_order_index,
]


def current_version(db: pw.Database, models: Models) -> int:
    if not db.table_exists("jobd_schema"):
        return 0
    row = models.Schema.select(pw.fn.MAX(models.Schema.version)).scalar()
    return int(row or 0)


def check_not_newer(version: int, url: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreTooNew(
            f"store {url} has schema version {version}, newer than this jobd supports "
            f"({SCHEMA_VERSION}); upgrade jobd. The store was not modified."
        )


def migrate(db: pw.Database, models: Models, url: str, lock: Callable[[], None]) -> int:
    """Bring the store to SCHEMA_VERSION; `lock` serializes concurrent migrators."""
    version = current_version(db, models)
    check_not_newer(version, url)
    if version == SCHEMA_VERSION:
        return version
    if version == 0 and isinstance(db, pw.SqliteDatabase):
        foreign = [
            t for t in db.get_tables() if t not in {m._meta.table_name for m in models.all()}
        ]
        if foreign:
            raise StoreUnavailable(
                f"store {url} is not a jobd store (it has other tables: "
                f"{', '.join(sorted(foreign)[:3])}); refusing to modify it"
            )
    with db.atomic():
        lock()
        db.create_tables([models.Schema], safe=True)
        version = current_version(db, models)
        check_not_newer(version, url)
        for number in range(version, SCHEMA_VERSION):
            MIGRATIONS[number](db, models)
            models.Schema.delete().execute()
            models.Schema.create(version=number + 1)
    return SCHEMA_VERSION
