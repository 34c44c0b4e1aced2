"""Peewee models, built per database so that no module-level `db` exists.

All datetimes are naive UTC (the edges convert), which both SQLite and
PostgreSQL `timestamp` columns compare correctly. Strings are `text`, without a
length limit: a host name, a schedule or a job name that the config accepts must
never be refused by a column (schema version 3 removed the varchar limits).
"""

from __future__ import annotations

from dataclasses import dataclass

import peewee as pw


@dataclass(frozen=True)
class Models:
    Schema: type[pw.Model]
    Job: type[pw.Model]
    Execution: type[pw.Model]
    Lease: type[pw.Model]
    Instance: type[pw.Model]
    AuditEvent: type[pw.Model]
    ApiToken: type[pw.Model]

    def all(self) -> list[type[pw.Model]]:
        return [
            self.Schema,
            self.Job,
            self.Execution,
            self.Lease,
            self.Instance,
            self.AuditEvent,
            self.ApiToken,
        ]


def build_models(db: pw.Database) -> Models:
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Schema(Base):
        version = pw.IntegerField()

        class Meta:
            table_name = "jobd_schema"

    class Job(Base):
        name = pw.TextField(primary_key=True)
        source = pw.TextField()
        spec = pw.TextField()  # JobSpec as JSON
        config_hash = pw.TextField()
        schedule = pw.TextField(null=True)
        timezone = pw.TextField()
        overlap = pw.TextField(default="skip")
        enabled = pw.BooleanField(default=True)
        paused = pw.BooleanField(default=False)
        removed = pw.BooleanField(default=False)
        # A [groups.NAME] quota the job counts against (schema version 2).
        group_name = pw.TextField(null=True, index=True)
        # The next slot to fire; the planner reads only rows whose slot is due.
        next_fire_at = pw.DateTimeField(null=True, index=True)
        last_fire_at = pw.DateTimeField(null=True)
        created_at = pw.DateTimeField()
        updated_at = pw.DateTimeField()

        class Meta:
            table_name = "jobs"

    class Execution(Base):
        id = pw.AutoField()
        job = pw.TextField()
        trigger = pw.TextField()
        scheduled_for = pw.DateTimeField(null=True)
        queued_at = pw.DateTimeField()
        not_before = pw.DateTimeField()  # retry back-off and jitter
        started_at = pw.DateTimeField(null=True)
        finished_at = pw.DateTimeField(null=True)
        duration_s = pw.FloatField(null=True)
        status = pw.TextField(index=True)
        exit_code = pw.IntegerField(null=True)
        signal = pw.IntegerField(null=True)
        attempt = pw.IntegerField(default=1)
        retry_of = pw.IntegerField(null=True)
        error = pw.TextField(null=True)
        instance = pw.TextField(null=True)
        host = pw.TextField(null=True)
        pid = pw.IntegerField(null=True)
        triggered_by = pw.TextField(null=True)
        config_hash = pw.TextField(null=True)
        cancel_requested = pw.BooleanField(default=False)
        log = pw.TextField(default="")
        log_bytes = pw.BigIntegerField(default=0)  # all output seen, kept or not
        epoch = pw.BigIntegerField(null=True)  # leader epoch that enqueued it

        class Meta:
            table_name = "executions"
            indexes = (
                # A slot fires at most once, whatever the number of leaders.
                (("job", "scheduled_for"), True),
                (("job", "started_at"), False),
                (("job", "id"), False),
                (("status", "not_before"), False),
                # Claims walk the queue in id order and stop after the slots they
                # fill, whatever its length (migration 6).
                (("status", "id"), False),
            )

    class Lease(Base):
        name = pw.TextField(primary_key=True)
        holder = pw.TextField(null=True)
        host = pw.TextField(null=True)
        epoch = pw.BigIntegerField(default=0)
        acquired_at = pw.DateTimeField(null=True)
        expires_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "leader_lease"

    class Instance(Base):
        id = pw.TextField(primary_key=True)
        host = pw.TextField()
        pid = pw.IntegerField()
        version = pw.TextField()
        started_at = pw.DateTimeField()
        heartbeat_at = pw.DateTimeField(index=True)
        role = pw.TextField(default="standby")
        running = pw.IntegerField(default=0)
        clock_skew = pw.FloatField(null=True)
        stopped_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "instances"

    class AuditEvent(Base):
        id = pw.AutoField()
        at = pw.DateTimeField(index=True)
        action = pw.TextField()
        actor = pw.TextField()
        target = pw.TextField(null=True)
        detail = pw.TextField(null=True)

        class Meta:
            table_name = "audit_events"

    class ApiToken(Base):
        """A bearer token of the HTTP API (schema version 4). Only a hash of its
        secret is kept; `key_id`, the public part of the token, finds the row."""

        name = pw.TextField(primary_key=True)
        key_id = pw.TextField(unique=True)
        secret_hash = pw.TextField()  # SHA-256 hex of the 256-bit secret
        group_name = pw.TextField(null=True)
        read_only = pw.BooleanField(default=False)
        created_at = pw.DateTimeField()
        created_by = pw.TextField()
        expires_at = pw.DateTimeField(null=True)

        class Meta:
            table_name = "api_tokens"

    return Models(Schema, Job, Execution, Lease, Instance, AuditEvent, ApiToken)
