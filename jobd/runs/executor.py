"""Runs claimed executions and records what happens to them, in batches.

Used by the daemon and by `jobd trigger --local`. Runner threads report events;
`flush()` writes them in one transaction, and keeps them in memory while the
store is unreachable, so no outcome is lost to an outage.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobd.core.model import JobSpec, NewRun, Outcome, Run, Settings, Source, Status, Trigger
from jobd.core.policies import follow_ups
from jobd.runs.fence import Fence
from jobd.runs.process import Event, RunProcess
from jobd.store import Store

log = logging.getLogger("jobd")
SPAWNERS = 4  # threads spawning children when many runs start at once


@dataclass
class _Finished:
    run: Run
    spec: JobSpec
    outcome: Outcome
    lasted: float | None = None  # seconds from its start to its end, by the monotonic clock
    follows: list[NewRun] | None = None


class Executor:
    def __init__(
        self,
        store: Store,
        instance: str,
        settings: Settings,
        wake: Callable[[], None] = lambda: None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.instance = instance
        self.settings = settings
        self.wake = wake
        # Read once: os.environ decodes every variable each time it is copied, and
        # a thousand runs starting at once would copy it a thousand times.
        self.base_env = dict(os.environ) if base_env is None else base_env
        self.running: dict[int, RunProcess] = {}
        self._events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self._pids: dict[int, int] = {}
        self._logs: dict[int, tuple[str, int]] = {}
        self._finished: dict[int, _Finished] = {}
        # Monotonic start and end of each run, so that an end written late (after a
        # store outage) is recorded as when it happened, not as when it was written.
        self._started_at: dict[int, float] = {}
        self._ended_at: dict[int, float] = {}
        self._spawn_queue: queue.SimpleQueue[RunProcess] = queue.SimpleQueue()
        self._spawners: list[threading.Thread] = []
        self._spawners_lock = threading.Lock()
        self.fence: Fence | None = None  # the daemon's; see jobd.runs.fence
        # The daemon's jobd.observe.observer.RunObserver (metrics, notifications): told of
        # starts and ends, it only counts and queues (None: `trigger --local`).
        self.observer: Any = None

    @property
    def busy(self) -> int:
        return len(self.running)

    @property
    def pending_writes(self) -> bool:
        return bool(self._pids or self._logs or self._finished)

    def start(self, run: Run, spec: JobSpec) -> RunProcess:
        """Start one run, spawning its child in this thread."""
        process = self._prepare(run, spec)
        process.start()
        return process

    def start_all(self, claimed: Sequence[tuple[Run, JobSpec]]) -> None:
        """Start claimed runs. One is spawned right here, for the lowest latency; of
        several, the children are spawned by SPAWNERS threads at once, because a
        spawn mostly waits for the kernel to exec the child, and those waits overlap."""
        processes = [self._prepare(run, spec) for run, spec in claimed]
        if len(processes) == 1:
            processes[0].start()
            return
        for process in processes:
            self._spawn_queue.put(process)
        with self._spawners_lock:
            while len(self._spawners) < min(SPAWNERS, len(processes)):
                thread = threading.Thread(target=self._spawn_loop, name="jobd-spawn", daemon=True)
                self._spawners.append(thread)
                thread.start()

    def _spawn_loop(self) -> None:
        while True:
            process = self._spawn_queue.get()
            try:
                process.start()
            except Exception as exc:  # a bug here must still end the run, never hang it
                process.finish(Outcome(Status.FAILED, error=f"jobd internal error: {exc!r}"))

    def admit(
        self, claimed: Sequence[tuple[Run, JobSpec]], file_digests: Mapping[str, str]
    ) -> list[tuple[Run, JobSpec]]:
        """The claimed runs whose config job is the one the config file defines
        (`file_digests`: name → JobSpec.digest); the others end as failed, unstarted.

        Whoever can write the store's jobs table could otherwise rewrite a config
        job (its command, its `user`) and have jobd, maybe as root, run it. A
        config job runs only as the config file that jobd parsed defines it.
        """
        admitted = []
        digests: dict[int, str] = {}  # by spec: a burst claims many runs of one job
        for run, spec in claimed:
            if spec.source is not Source.FILE:
                admitted.append((run, spec))
                continue
            if id(spec) not in digests:
                digests[id(spec)] = spec.digest
            digest = digests[id(spec)]
            expected = file_digests.get(spec.name)
            if digest == expected:
                admitted.append((run, spec))
                continue
            if expected is None:
                why = "this config job is not in the config file jobd was started with"
            else:
                why = (
                    f"its stored definition (hash {digest[:12]}) does not match the config "
                    f"file this jobd parsed (hash {expected[:12]}): changed in the store "
                    "outside jobd, or applied by a jobd with another config; a reload "
                    "(SIGHUP) applies this file's"
                )
            log.error(
                "run %s of %s refused: %s",
                run.id,
                run.job,
                why,
                extra={"action": "run.refused", "job": run.job, "execution_id": run.id},
            )
            # Its spec is not trusted, so neither are its retries or chains.
            outcome = Outcome(Status.FAILED, error=f"refused: {why}")
            self._finished[run.id] = _Finished(run, spec, outcome, follows=[])
            self.wake()  # to be recorded now, not at the next timer
        return admitted

    def _prepare(self, run: Run, spec: JobSpec) -> RunProcess:
        process = RunProcess(
            run, spec, self.settings, self._report, self.base_env, store_url=self.store.url
        )
        started = time.monotonic()
        if self.fence is not None:
            process.fenced = functools.partial(self.fence.reason, started)
        self.running[run.id] = process
        self._started_at[run.id] = started
        if self.observer is not None:
            self.observer.run_started(run, spec)
        log.info(
            "run %s of %s started (%s, attempt %s)",
            run.id,
            run.job,
            run.trigger.value,
            run.attempt,
            extra={"action": "run.start", "job": run.job, "execution_id": run.id},
        )
        return process

    def _report(self, event: Event) -> None:
        if event.kind == "done":
            self._ended_at[event.run_id] = time.monotonic()
        self._events.put(event)
        # An end frees a slot and may queue a retry: look at once. Pids and output
        # wait for the next round, at most ACTIVE_POLL away while runs go on.
        if event.kind == "done":
            self.wake()

    def collect(self, now_rand: Callable[[], float] = random.random) -> None:
        """Move runner events into the pending writes (no I/O)."""
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            if event.kind == "started" and event.pid is not None:
                self._pids[event.run_id] = event.pid
            elif event.kind == "log" and event.log is not None:
                self._logs[event.run_id] = (event.log, event.log_bytes)
            elif event.kind == "done":
                process = self.running.pop(event.run_id)
                process.join(timeout=1)
                if event.log is not None:
                    self._logs[event.run_id] = (event.log, event.log_bytes)
                assert event.outcome is not None
                started = self._started_at.pop(event.run_id, None)
                ended = self._ended_at.pop(event.run_id, None)
                lasted = ended - started if started is not None and ended is not None else None
                self._finished[event.run_id] = _Finished(
                    process.run_record, process.spec, event.outcome, lasted
                )

    def flush(self) -> None:
        """Write pending progress in one transaction. Raises store errors; keeps them pending."""
        self.collect()
        if not self.pending_writes:
            return
        now = self.store.now()
        finishes = []
        for run_id, done in self._finished.items():
            if done.follows is None:
                done.follows = follow_ups(done.spec, done.run, done.outcome, now, random.random())
            finishes.append((run_id, self.instance, done.outcome, done.follows))
        lasted = {i: done.lasted for i, done in self._finished.items() if done.lasted is not None}
        applied = self.store.record_progress(self._pids, self._logs, finishes, lasted)
        for (run_id, _inst, outcome, follows), ok in zip(finishes, applied, strict=True):
            done = self._finished[run_id]
            self._log_end(done.run, outcome, follows, ok)
            if ok and self.observer is not None:
                retried = any(f.trigger is Trigger.RETRY for f in follows)
                self.observer.run_ended(done.run, done.spec, outcome, retried, done.lasted)
        self._pids.clear()
        self._logs.clear()
        self._finished.clear()
        if any(f[3] for f in finishes):
            self.wake()

    @staticmethod
    def _log_end(run: Run, outcome: Outcome, follows: list[NewRun], applied: bool) -> None:
        extra = {"action": "run.end", "job": run.job, "execution_id": run.id}
        if not applied:
            log.warning(
                "run %s of %s ended (%s%s) but was already recorded as ended elsewhere; kept that",
                run.id,
                run.job,
                outcome.status.value,
                f": {outcome.error}" if outcome.error else "",
                extra=extra,
            )
            return
        level = logging.INFO if outcome.status is Status.SUCCEEDED else logging.WARNING
        detail = f": {outcome.error}" if outcome.error else ""
        log.log(
            level, "run %s of %s %s%s", run.id, run.job, outcome.status.value, detail, extra=extra
        )
        for follow in follows:
            log.info(
                "queued %s of %s (attempt %s)",
                follow.trigger.value,
                follow.job,
                follow.attempt,
                extra={"action": "run.queue", "job": follow.job},
            )

    def check_cancels(self) -> None:
        """Stop runs whose cancel was requested in the store (by `jobd cancel` or
        replace), and runs the store no longer counts as ours: another instance marked
        them abandoned while we were paused or cut off, so a retry may already run."""
        if not self.running:
            return
        for run_id, reason in self.store.runs_to_stop(self.instance, list(self.running)).items():
            process = self.running.get(run_id)
            if process is not None:
                process.stop(Status.CANCELLED, reason)

    def fence_all(self) -> None:
        """Stop every run: this daemon may be taken for gone (jobd.runs.fence). Recorded
        as abandoned, so that each is retried, once, by whoever is still there."""
        if self.fence is None:
            return
        reason = self.fence.reason()
        for process in list(self.running.values()):
            if reason is not None and not process.stop_requested:
                process.stop(Status.ABANDONED, reason)

    def stop_all(self, reason: str) -> None:
        for process in list(self.running.values()):
            process.stop(Status.CANCELLED, reason)
