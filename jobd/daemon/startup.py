"""What a daemon does once, before its first tick: waiting for a store that does
not answer yet, the wake-ups it can have, its metrics endpoint, and what it can
say at once about the config (a job that names a user, when not root)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from jobd.core.model import Config
from jobd.errors import first_line
from jobd.observe.metrics import MetricsServer
from jobd.store import STORE_ERRORS, Store
from jobd.system.sdnotify import Notifier
from jobd.system.storewait import PROBE_EVERY, StartupWait
from jobd.system.waker import Waker

log = logging.getLogger("jobd")


def start_when_store_answers(
    start: Callable[[], None],
    store: Store,
    max_backoff: float,
    notifier: Notifier,
    stopping: Callable[[], bool],
) -> bool:
    """`start()`, again while the store does not answer (it went away between
    `jobd run`'s wait and here); False when a stop was asked for meanwhile."""
    wait: StartupWait | None = None
    while not stopping():
        try:
            start()
            return True
        except STORE_ERRORS as exc:
            store.reset_connection()
            if wait is None:
                wait = StartupWait(store.url, max_backoff, notifier, stopping)
            wait.failed(first_line(exc))
            if not wait.pause(PROBE_EVERY):
                return False
    return False


def open_wakeups(waker: Waker, store: Store, idle_cap: float) -> bool:
    """The wake socket `jobd trigger` pokes (SQLite), clock steps, the store's file,
    and LISTEN (PostgreSQL). True when the first three are all watched."""
    wake_dir = store.wake_dir()
    if wake_dir:
        try:
            waker.bind_socket(wake_dir)
        except OSError as exc:
            log.warning(
                "cannot open the wake-up socket in %s (%s): triggers start within %.0fs",
                wake_dir,
                exc.strerror or exc,
                idle_cap,
                extra={"action": "daemon.wake"},
            )
    watched = waker.watch_steps_and_file()
    waker.keep_listening()
    return watched and waker.socket_bound


def serve_metrics(listen: str | None, store: Store) -> MetricsServer | None:
    """`[metrics] listen`; a port that cannot be had is said, and jobd runs on
    without it (its scheduling matters more than its metrics)."""
    if listen is None:
        return None
    try:
        server = MetricsServer(listen, store)
    except OSError as exc:
        log.error(
            "cannot serve metrics on %s (%s); running without",
            listen,
            exc.strerror or exc,
            extra={"action": "metrics.listen"},
        )
        return None
    server.start()
    log.info(
        "serving metrics on http://%s/metrics",
        server.address,
        extra={"action": "metrics.listen"},
    )
    return server


def check_users(config: Config) -> None:
    """Say at once what each run of such a job would say: only root switches users."""
    uid = os.geteuid()
    if uid == 0:
        return
    for spec in config.jobs.values():
        if spec.user:
            log.error(
                "job %s has user = %r, but jobd runs as uid %d, not root: its runs will fail",
                spec.name,
                spec.user,
                uid,
                extra={"action": "config.user", "job": spec.name},
            )
