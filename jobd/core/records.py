"""The keys of a recorded run, as every front end shows it (SPEC section 4).

Apart from the model so that the CLI's fast read path (jobd.store.reader) can
name its columns without loading it.
"""

# An execution in `jobd executions --json`, in order; also the columns of the
# executions table that `jobd executions` reads.
RUN_KEYS = (
    "id",
    "job",
    "trigger",
    "scheduled_for",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_s",
    "status",
    "exit_code",
    "signal",
    "attempt",
    "error",
    "instance",
    "host",
    "pid",
    "triggered_by",
)
# What `jobd show` adds: every other column of the executions table.
DETAIL_KEYS = (
    "not_before",
    "retry_of",
    "config_hash",
    "cancel_requested",
    "epoch",
    "log_bytes",
    "log",
)
# Every status a run can have (jobd.core.model.Status), for front ends that
# check a filter without loading the model.
STATUSES = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "timed_out",
    "cancelled",
    "abandoned",
    "skipped",
)
