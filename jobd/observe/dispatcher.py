"""Telling a run's outcome to its channels and check-in URL, off the daemon's loop.

The loop and the runs only hand events over (`run_started`, `run_ended`,
`run_abandoned`): a queue append, never I/O. One dispatcher thread reads what a
message needs from the store, a few sender threads do the network, and a failed
attempt is tried again with doubling delays. Every final result is logged,
counted (`counts`, exported as jobd_notifications_total) and kept as an audit
event that `jobd show` lists; nothing is dropped silently, even at shutdown.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jobd.core.masking import Masker
from jobd.core.model import NOTIFY_RETRY_DELAY_MAX, Config, JobSpec, NotifyChannel, Run, Status
from jobd.observe import messages, senders
from jobd.observe.transport import DeliveryFailed
from jobd.store.notices import previous_outcome, record_delivery

log = logging.getLogger("jobd")
SENDERS = 4  # deliveries in flight at once: a slow receiver must not hold up the others
STORE_RETRY = 2.0  # seconds between reads of a run while the store is away
PING = "ping"  # the channel name check-in pings are counted and audited under
PING_RETRIES, PING_RETRY_DELAY = 5, 1.0  # a ping is late after a minute or so anyway


@dataclass(order=True)
class _Delivery:
    due: float  # monotonic
    seq: int
    run_id: int = field(compare=False)
    job: str = field(compare=False)
    channel: str = field(compare=False)
    event: str = field(compare=False)
    send: Callable[[], None] = field(compare=False)
    retries: int = field(compare=False)
    retry_delay: float = field(compare=False)
    attempt: int = field(default=0, compare=False)
    cancelled: bool = field(default=False, compare=False)


@dataclass
class _Ended:
    run_id: int
    job: str
    spec: JobSpec | None  # None: read it from the store (an abandoned run)
    will_retry: bool
    due: float = 0.0


class Notifications:
    def __init__(
        self,
        store: Any,
        config: Config,
        host: str,
        environ: Mapping[str, str] | None = None,
        mask: Callable[[str], str] = lambda text: text,
        count: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.actor = f"jobd@{host}"
        self.environ = os.environ if environ is None else environ
        self.mask = mask  # the daemon's own masker (store password, env values)
        self.counts: Counter[tuple[str, str]] = Counter()
        self._count_hook = count
        self.configure(config)
        self._cond = threading.Condition()
        self._ended: list[_Ended] = []
        self._heap: list[_Delivery] = []
        self._results: list[tuple[_Delivery, DeliveryFailed | None]] = []
        self._in_flight = 0
        self._starts: dict[int, _Delivery] = {}  # run id → its /start ping, until sent
        self._after_start: dict[int, _Delivery] = {}  # end pings waiting for their /start
        self._seq = itertools.count()
        self._closing = False
        self._senders = ThreadPoolExecutor(SENDERS, thread_name_prefix="jobd-notify-send")
        self._thread = threading.Thread(target=self._loop, name="jobd-notify", daemon=True)
        self._thread.start()

    def configure(self, config: Config) -> None:
        """Channels and the [jobd] defaults; again on every reload."""
        self.channels: dict[str, NotifyChannel] = dict(config.channels)
        self.default_notify = config.settings.notify
        self.default_notify_on = config.settings.notify_on
        # Said now rather than at the first failure, which may come weeks later.
        for channel in self.channels.values():
            for variable in (channel.secret_env, channel.password_env):
                if variable and not self.environ.get(variable):
                    log.warning(
                        "[notify.%s] names %s, which jobd's environment does not set: "
                        "its notifications will fail",
                        channel.name,
                        variable,
                        extra={"action": "notify.config"},
                    )

    @property
    def active(self) -> bool:
        return bool(self.channels)

    # -- from the daemon's threads: appends only -----------------------------------

    def run_started(self, run: Run, spec: JobSpec) -> None:
        if not spec.ping_url:
            return
        delivery = self._ping(run.id, run.job, spec.ping_url, "start", "")
        with self._cond:
            self._starts[run.id] = delivery
            self._push(delivery)

    def run_ended(self, run: Run, spec: JobSpec, will_retry: bool) -> None:
        if not spec.ping_url and not self._channels_of(spec):
            return
        self._hand_over(_Ended(run.id, run.job, spec, will_retry))

    def run_abandoned(self, run: Run) -> None:
        self._hand_over(_Ended(run.id, run.job, None, will_retry=False))

    def _hand_over(self, ended: _Ended) -> None:
        with self._cond:
            self._ended.append(ended)
            self._cond.notify()

    def close(self, timeout: float) -> None:
        """Deliver what is pending for up to `timeout` seconds; log what is left."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closing = True
            self._cond.notify()
            while (self._ended or self._heap or self._in_flight) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            left = [d for d in self._heap if not d.cancelled]
            self._heap.clear()
            ended, self._ended = self._ended, []
            in_flight = self._in_flight
        recording = True  # until the store fails once: a stopping daemon must not hang on it
        for delivery in left:
            recording = self._gave_up(
                delivery, "jobd stopped before it could be delivered", record=recording
            )
        for end in ended:
            log.error(
                "run %s of %s: its notifications were not sent: jobd stopped first",
                end.run_id,
                end.job,
                extra={"action": "notify.failed", "job": end.job, "execution_id": end.run_id},
            )
        if in_flight:
            log.warning(
                "%d notification(s) still being sent as jobd stops: their results are not known",
                in_flight,
                extra={"action": "notify"},
            )
        self._senders.shutdown(wait=False, cancel_futures=True)

    # -- the dispatcher thread --------------------------------------------------------

    def _push(self, delivery: _Delivery) -> None:
        heapq.heappush(self._heap, delivery)
        self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                ended = [e for e in self._ended if e.due <= now]
                self._ended = [e for e in self._ended if e.due > now]
                results, self._results = self._results, []
                due: list[_Delivery] = []
                while self._heap and self._heap[0].due <= now:
                    due.append(heapq.heappop(self._heap))
                if not (ended or results or due):
                    waits = [d.due for d in self._heap[:1]] + [e.due for e in self._ended]
                    self._cond.wait(max(0.0, min(waits) - now) if waits else None)
                    continue
            for end in ended:
                self._on_end(end)
            for delivery, error in results:
                self._on_result(delivery, error)
            for delivery in due:
                if not delivery.cancelled:
                    self._send(delivery)

    def _send(self, delivery: _Delivery) -> None:
        delivery.attempt += 1
        with self._cond:
            self._in_flight += 1

        def attempt() -> None:
            error: DeliveryFailed | None = None
            try:
                delivery.send()
            except DeliveryFailed as exc:
                error = exc
            except Exception as exc:  # a bug must fail the delivery, never the thread
                error = DeliveryFailed(f"jobd internal error: {type(exc).__name__}")
            with self._cond:
                self._in_flight -= 1
                self._results.append((delivery, error))
                self._cond.notify_all()

        try:
            self._senders.submit(attempt)
        except RuntimeError:  # shut down meanwhile: close() saw it neither queued nor sent
            with self._cond:
                self._in_flight -= 1
            self._gave_up(delivery, "jobd stopped before it could be delivered", record=False)

    def _on_result(self, delivery: _Delivery, error: DeliveryFailed | None) -> None:
        extra = {"action": "notify", "job": delivery.job, "execution_id": delivery.run_id}
        if error is None:
            self._count(delivery.channel, "delivered")
            log.info(
                "run %s of %s: %r notice sent to %s%s",
                delivery.run_id,
                delivery.job,
                delivery.event,
                delivery.channel,
                f" (attempt {delivery.attempt})" if delivery.attempt > 1 else "",
                extra=extra,
            )
            if delivery.channel != PING:  # pings come with every run: only failures kept
                self._audit(delivery, attempts=delivery.attempt)
            self._start_done(delivery)
            return
        if not error.permanent and delivery.attempt <= delivery.retries and not self._closing:
            delay = min(NOTIFY_RETRY_DELAY_MAX, delivery.retry_delay * 2 ** (delivery.attempt - 1))
            self._count(delivery.channel, "retried")
            log.warning(
                "run %s of %s: %r notice to %s failed (%s); retrying in %.1fs",
                delivery.run_id,
                delivery.job,
                delivery.event,
                delivery.channel,
                error,
                delay,
                extra=extra,
            )
            delivery.due = time.monotonic() + delay
            with self._cond:
                self._push(delivery)
            return
        self._gave_up(delivery, str(error))
        self._start_done(delivery)

    def _gave_up(self, delivery: _Delivery, reason: str, record: bool = True) -> bool:
        """Log, count and (with `record`) audit a delivery given up; False when
        the audit event could not be written."""
        self._count(delivery.channel, "failed")
        log.error(
            "run %s of %s: %r notice to %s not delivered after %d attempt(s): %s",
            delivery.run_id,
            delivery.job,
            delivery.event,
            delivery.channel,
            delivery.attempt,
            reason,
            extra={"action": "notify.failed", "job": delivery.job, "execution_id": delivery.run_id},
        )
        return record and self._audit(delivery, attempts=delivery.attempt, error=reason)

    def _start_done(self, delivery: _Delivery) -> None:
        """A /start ping is through (or given up): the run's end ping may go now."""
        if delivery.channel != PING or delivery.event != "start":
            return
        with self._cond:
            self._starts.pop(delivery.run_id, None)
            waiting = self._after_start.pop(delivery.run_id, None)
            if waiting is not None:
                waiting.due = time.monotonic()
                self._push(waiting)

    def _audit(self, delivery: _Delivery, **detail: Any) -> bool:
        try:
            record_delivery(
                self.store,
                self.actor,
                delivery.job,
                delivery.run_id,
                delivery.channel,
                delivery.event,
                **detail,
            )
        except Exception as exc:  # the store may be away; the log line stands
            log.warning(
                "cannot record the notification result of run %s: %s",
                delivery.run_id,
                " ".join(str(exc).split())[:200],
                extra={"action": "notify", "execution_id": delivery.run_id},
            )
            return False
        return True

    def _on_end(self, end: _Ended) -> None:
        """Read the recorded run and queue what it should tell."""

        try:
            run = self.store.execution(end.run_id)
            spec = end.spec
            if run is not None and spec is None:
                record = self.store.job(run.job)
                spec = record.spec if record is not None else None
            if run is None or spec is None or not run.status.final:
                return
            channels = self._channels_of(spec)
            wanted = self._wanted_of(spec)
            previous_failed = False
            if channels and run.status is Status.SUCCEEDED and "recovered" in wanted:
                before = previous_outcome(self.store, run.job, run.id)
                previous_failed = before is not None and before in messages.FAILURES
        except Exception as exc:
            if end.due == 0.0:  # said once, not at every try
                log.warning(
                    "cannot read run %s for its notifications (%s); trying again",
                    end.run_id,
                    " ".join(str(exc).split())[:200],
                    extra={"action": "notify", "execution_id": end.run_id},
                )
            self.store.reset_connection()
            end.due = time.monotonic() + STORE_RETRY
            with self._cond:
                self._ended.append(end)
            return
        ending = messages.RunEnd(run, end.will_retry, previous_failed)
        events = messages.events_for(ending)
        mask = self._masker(spec)
        tail = mask(messages.output_tail(run.log))
        # The free-text fields are masked too; the whole webhook body once more.
        run = dataclasses.replace(
            run,
            log="",
            error=mask(run.error) if run.error else run.error,
            triggered_by=mask(run.triggered_by) if run.triggered_by else run.triggered_by,
        )
        event = messages.chosen_event(events, wanted)
        if event is not None:
            for name in channels:
                channel = self.channels.get(name)
                if channel is None:
                    log.error(
                        "run %s of %s: no [notify.%s] channel (removed from the config?)",
                        run.id,
                        run.job,
                        name,
                        extra={"action": "notify.failed", "job": run.job},
                    )
                    continue
                self._queue(self._message(channel, run, event, tail, mask))
        phase = messages.ping_phase(run.status) if not end.will_retry else None
        if spec.ping_url and phase is not None:
            ping = self._ping(
                run.id, run.job, spec.ping_url, phase, tail if phase == "fail" else ""
            )
            with self._cond:
                start = self._starts.get(run.id)
                if start is not None and start.attempt > 0 and start in self._heap:
                    start.cancelled = True  # waiting to be retried: late now, and superseded
                    self._starts.pop(run.id, None)
                    start = None
                if start is not None:
                    self._after_start[run.id] = ping  # in flight: the end must not overtake it
                else:
                    self._push(ping)

    def _queue(self, delivery: _Delivery) -> None:
        with self._cond:
            self._push(delivery)

    # -- building deliveries ----------------------------------------------------------

    def _channels_of(self, spec: JobSpec) -> tuple[str, ...]:
        return spec.notify if spec.notify is not None else self.default_notify

    def _wanted_of(self, spec: JobSpec) -> tuple[str, ...]:
        return spec.notify_on if spec.notify_on is not None else self.default_notify_on

    def _masker(self, spec: JobSpec, *extra: str) -> Callable[[str], str]:
        secrets = [self.environ.get(name, "") for name in spec.secret_env]
        masker = Masker([*secrets, *extra], url_passwords=True)
        return lambda text: self.mask(masker.mask(text))

    def _new(self, run_id: int, job: str, channel: str, event: str, send: Callable[[], None],
             retries: int, retry_delay: float) -> _Delivery:  # fmt: skip
        return _Delivery(
            time.monotonic(), next(self._seq), run_id, job, channel, event, send, retries,
            retry_delay,
        )  # fmt: skip

    def _ping(self, run_id: int, job: str, url: str, phase: str, tail: str) -> _Delivery:
        send = senders.ping(url, phase, tail)
        return self._new(run_id, job, PING, phase, send, PING_RETRIES, PING_RETRY_DELAY)

    def _message(
        self, channel: NotifyChannel, run: Run, event: str, tail: str, mask: Callable[[str], str]
    ) -> _Delivery:
        if channel.type == "webhook":
            send = senders.webhook(channel, run, event, self.host, tail, mask, self.environ)
        else:
            send = senders.mail(channel, run, event, self.host, tail, self.environ)
        return self._new(
            run.id, run.job, channel.name, event, send, channel.retries, channel.retry_delay
        )

    def _count(self, channel: str, result: str) -> None:
        self.counts[(channel, result)] += 1
        if self._count_hook is not None:
            self._count_hook(channel, result)
