"""The client's store mode: the operations layer (jobd.ops) on the store itself."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from jobd.errors import NotFound
from jobd.ops.context import Context
from jobd.ops.context import actor as default_actor
from jobd.ops.jobs import list_jobs, schedule, set_paused, unschedule
from jobd.ops.listing import find_runs
from jobd.ops.runs import cancel, trigger
from jobd.ops.shapes import follow_output, job_json, run_json, wait_final
from jobd.store.reader import Reader


class StoreTransport:
    """The store mode: the operations layer, exactly as the CLI calls it."""

    def __init__(self, store_url: str, config: str | None, actor: str | None) -> None:
        self.ctx = Context(config_path=config, store_override=store_url)
        self.actor = actor or default_actor()

    def close(self) -> None:
        self.ctx.close()

    def _reader(self) -> Any:
        return Reader.over(self.ctx.store)

    def jobs(self) -> list[dict[str, Any]]:

        entries = list_jobs(self.ctx.scope(), datetime.now(UTC))
        last = self.ctx.store.last_statuses([e.name for e in entries])
        return [job_json(e, last) for e in entries]

    def job(self, name: str) -> dict[str, Any]:

        scope = self.ctx.scope()
        scope.find_job(name)
        entry = next(e for e in list_jobs(scope, datetime.now(UTC)) if e.name == name)
        return job_json(entry, self.ctx.store.last_statuses([name]), with_fires=True)

    def trigger(self, name: str, wait: float) -> dict[str, Any]:
        queued = trigger(self.ctx.scope(), self.actor, name)
        return self.execution(queued.run_id)

    def set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        change = set_paused(self.ctx.scope(), self.actor, name, paused)
        return {"job": name, "paused": change.paused, "changed": change.changed}

    def schedule(self, name: str, table: dict[str, Any]) -> dict[str, Any]:
        done = schedule(self.ctx.scope(whole_config=True), self.actor, name, table, "Client")
        return {"job": name, "created": done.created, "next_fire": done.record.next_fire_at}

    def unschedule(self, name: str) -> None:
        unschedule(self.ctx.scope(), self.actor, name)

    def execution(self, run_id: int) -> dict[str, Any]:
        row = self._reader().execution(run_id, with_log=False)
        if row is None:
            raise NotFound(f"no run with id {run_id} (see `jobd executions`)")
        return run_json(row)

    def executions(
        self, job: str | None, statuses: list[str], since: str | None, limit: int
    ) -> list[dict[str, Any]]:

        return find_runs(self._reader, datetime.now(UTC), job, statuses, since, limit or None)

    def cancel(self, run_id: int) -> dict[str, Any]:
        done = cancel(self.ctx.scope(), self.actor, run_id)
        return {"id": run_id, "job": done.job, "was": done.was, "host": done.host}

    def wait(self, run_id: int, seconds: float) -> dict[str, Any]:
        wait_final(self._reader(), run_id, seconds)
        return self.execution(run_id)

    def log(self, run_id: int) -> dict[str, Any]:
        self.execution(run_id)  # NotFound as the CLI says it
        log, total = self._reader().log(run_id)
        return {"log": log, "log_bytes": total}

    def follow(self, run_id: int) -> Iterator[str]:
        self.execution(run_id)
        return follow_output(self._reader(), run_id)

    def audit(self, limit: int) -> list[dict[str, Any]]:
        return self.ctx.store.audit_events(limit)
