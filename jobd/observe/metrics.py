"""Prometheus metrics, through the official client library (prometheus_client).

Two kinds, so that sums over several daemons on one store are right:

- What one daemon did and is (every instance exports its own): runs it ended
  (`jobd_runs_total`), their durations, the delay from due to started, store
  errors, quota skips, notification results, and `jobd_is_leader`,
  `jobd_lease_epoch`, `jobd_running`. Summed over instances, each is counted
  once.
- What the store says (only the leader exports them; a standby exports none,
  so no sum doubles them): each job's next fire, last success and pause state,
  and `jobd_queue_depth`. Two statements per scrape (jobd.store.gauges).

`render(store)` gives the text of a scrape: `[metrics] listen` serves it, and
`jobd metrics` prints it (store gauges only, plus `jobd_running` from the
store) for node_exporter's textfile collector.

The job's name is the label `job_name`, not `job`: Prometheus gives every
scraped series its target's `job` label, and a `job` label of ours would be
renamed `exported_job` (kube-state-metrics says `job_name` for the same reason).
"""

from __future__ import annotations

import http.server
import logging
import threading
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from jobd.core.config.channels import split_listen
from jobd.store.gauges import active_counts, job_gauges
from jobd.store.reader import Reader

if TYPE_CHECKING:
    from jobd.core.model import Outcome, Run
    from jobd.store.gauges import JobGauge

log = logging.getLogger("jobd")
# A `_created` series beside every counter doubles what is stored for nothing
# our rules or dashboard read.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Jobs run from milliseconds to hours.
DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 21600, 86400)
# A due run should start within milliseconds; seconds mean a full host or a late leader.
DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class InstanceMetrics:
    """One daemon's own metrics. Counters are updated from the daemon's threads
    (prometheus_client's are thread-safe); the role and running count are set
    by the loop once per round, so a scrape never touches the leader guard."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.runs = Counter(
            "jobd_runs",
            "Runs this instance ended, by job, final status and trigger.",
            ["job_name", "status", "trigger"],
            registry=r,
        )
        self.duration = Histogram(
            "jobd_run_duration_seconds",
            "How long runs took, start to end, by job.",
            ["job_name"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.fire_delay = Histogram(
            "jobd_fire_delay_seconds",
            "From when a run was due (its slot, plus jitter or retry delay) to its start.",
            buckets=DELAY_BUCKETS,
            registry=r,
        )
        self.store_errors = Counter(
            "jobd_store_errors", "Rounds of the loop that failed on a store error.", registry=r
        )
        self.quota_refusals = Counter(
            "jobd_quota_refusals",
            "Scheduled fires skipped because their group was at max_active.",
            ["group"],
            registry=r,
        )
        self.notifications = Counter(
            "jobd_notifications",
            "Notification and check-in ping attempts by channel ('ping' for pings) and "
            "result: delivered, retried (an attempt failed, another follows), failed "
            "(given up).",
            ["channel", "result"],
            registry=r,
        )
        self.is_leader = Gauge("jobd_is_leader", "1 while this instance leads.", registry=r)
        self.lease_epoch = Gauge(
            "jobd_lease_epoch",
            "The fencing epoch of this instance's latest lease term (0 under the file lock).",
            registry=r,
        )
        self.running = Gauge("jobd_running", "Runs going on in this instance.", registry=r)
        self.leading = False
        self._epoch_seen = False

    def loop_state(self, leading: bool, epoch: int | None, running: int) -> None:
        self.leading = leading
        self.is_leader.set(1 if leading else 0)
        if epoch is not None:
            self.lease_epoch.set(epoch)
        self.running.set(running)

    def run_started(self, run: Run) -> None:
        # Its outcomes' series exist at 0 from now on: increase() sees a first
        # failure only as a step from a sample before it.
        for status in ("succeeded", "failed", "timed_out"):
            self.runs.labels(run.job, status, run.trigger.value)
        if run.started_at is not None:
            delay = (run.started_at - run.not_before).total_seconds()
            self.fire_delay.observe(max(0.0, delay))

    def run_ended(self, run: Run, outcome: Outcome, lasted: float | None) -> None:
        self.runs.labels(run.job, outcome.status.value, run.trigger.value).inc()
        if lasted is not None:
            self.duration.labels(run.job).observe(lasted)

    def run_abandoned(self, run: Run) -> None:
        """This instance found `run` abandoned (its own instance vanished)."""
        self.runs.labels(run.job, "abandoned", run.trigger.value).inc()

    def count_notification(self, channel: str, result: str) -> None:
        self.notifications.labels(channel, result).inc()


def store_text(store: Any, with_running: bool) -> bytes:
    """The store's gauges in the text format (two statements).

    Written here rather than through the client's collectors: at 10,000 jobs
    (30,000 samples) a custom collector of GaugeMetricFamily rendered by
    generate_latest() took about 200 ms of CPU, filling the families alone
    40 ms, where a scrape must stay within 50 ms. The format is the one
    generate_latest() writes; the tests read it with the client's own parser.
    """

    reader = store if isinstance(store, Reader) else Reader.over(store)
    lines = _job_lines(job_gauges(reader))
    queued, running = active_counts(reader)
    parts = [
        _family(
            "jobd_job_next_fire_timestamp_seconds",
            "When the job's schedule fires next (Unix time); absent for unscheduled jobs.",
        ),
        *filter(None, map(_NEXT_FIRE, lines)),
        _family(
            "jobd_job_last_success_timestamp_seconds",
            "When the job's latest successful run ended (Unix time); absent before one.",
        ),
        *filter(None, map(_SUCCESS, lines)),
        _family(
            "jobd_job_paused",
            "1 when the job's schedule does not fire (paused or enabled = false).",
        ),
        *map(_PAUSED, lines),
        _family("jobd_queue_depth", "Runs queued, not started yet."),
        f"jobd_queue_depth {float(queued)}\n".encode(),
    ]
    if with_running:
        parts += [
            _family("jobd_running", "Runs going on, over every instance."),
            f"jobd_running {float(running)}\n".encode(),
        ]
    return b"".join(parts)


# Each job's three lines as the last scrape wrote them, by the row they came
# from. Between two scrapes most jobs' rows are unchanged, and looking a row up
# costs a fifth of formatting its lines again. Only the last scrape's rows are
# kept, so removed jobs and old values fall out. The lines are kept encoded and
# taken apart by map() and itemgetter, so that an unchanged job costs a lookup
# and no Python statement of ours.
_Lines = tuple[bytes, bytes | None, bytes | None]  # paused, next fire, last success
_PAUSED, _NEXT_FIRE, _SUCCESS = itemgetter(0), itemgetter(1), itemgetter(2)
_written: dict[JobGauge, _Lines] = {}


def _job_lines(rows: list[JobGauge]) -> list[_Lines]:
    global _written
    known = _written.get
    lines = [known(row) or _format(row) for row in rows]
    # One assignment: a concurrent scrape reads one dict or the other.
    _written = dict(zip(rows, lines, strict=True))
    return lines


def _format(row: JobGauge) -> _Lines:
    """A job's lines; its times come in milliseconds and are written in seconds."""
    name, paused, next_fire, success = row
    label = f'{{job_name="{_label(name)}"}} '
    return (
        f"jobd_job_paused{label}{'1.0' if paused else '0.0'}\n".encode(),
        None
        if next_fire is None
        else f"jobd_job_next_fire_timestamp_seconds{label}{next_fire / 1000!r}\n".encode(),
        None
        if success is None
        else f"jobd_job_last_success_timestamp_seconds{label}{success / 1000!r}\n".encode(),
    )


def _family(name: str, help_text: str) -> bytes:
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge\n".encode()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_instance: InstanceMetrics | None = None  # this process's daemon, when it has one


def instance_metrics() -> InstanceMetrics:
    """The daemon's metrics, made on first use; one per process."""
    global _instance
    if _instance is None:
        _instance = InstanceMetrics()
    return _instance


def render(store: Any = None) -> bytes:
    """The text of one scrape (Prometheus text format 0.0.4).

    `store` is a jobd Store (or a jobd.store.reader.Reader). In a daemon: its own
    metrics, and the store's gauges when it leads. Without a daemon in the
    process (`jobd metrics`): the store's gauges and the running count. A store
    that does not answer leaves its gauges out; the daemon's own are still given.
    """
    daemon = _instance
    own = generate_latest(daemon.registry) if daemon is not None else b""
    if store is None or (daemon is not None and not daemon.leading):
        return own
    try:
        gauges = store_text(store, with_running=daemon is None)
    except Exception as exc:  # a scrape still answers with what it has
        log.warning(
            "metrics: the store's gauges are left out: %s",
            " ".join(str(exc).split())[:200],
            extra={"action": "metrics.scrape"},
        )
        if daemon is not None:
            daemon.store_errors.inc()
        return own
    return own + gauges


class MetricsServer:
    """`[metrics] listen`: /metrics over HTTP in one thread of its own.

    One thread serves scrapes one after another, so the store is read over one
    connection and a slow scraper cannot pile up queries; the loop never waits."""

    def __init__(self, listen: str, store: Any) -> None:
        host, port = split_listen(listen)
        store_ref = store

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics here")
                    return
                body = render(store_ref)
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.HTTPServer((host, port), Handler)
        self.address = f"{host or '0.0.0.0'}:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="jobd-metrics", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
