"""`jobd run`: the daemon in the foreground."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from jobd.cli.context import pass_ctx
from jobd.errors import JobdError, UsageError
from jobd.ops.context import Context
from jobd.system.forkcall import call_in_child

if TYPE_CHECKING:
    from jobd.core.model import Config
    from jobd.system.sdnotify import Notifier
    from jobd.system.signals import SignalFlags
    from jobd.system.storewait import StartupWait, StoreDown


@click.command()
@click.option("--once", is_flag=True, help="Apply the config to the store and exit.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--log-format", type=click.Choice(["human", "json"]), default="human", show_default=True
)
@click.option(
    "--detach",
    is_flag=True,
    help="Fork into the background (not under systemd or launchd). Needs --pidfile.",
)
@click.option("--pidfile", metavar="PATH", help="With --detach: the locked pid file.")
@click.option(
    "--log-file",
    metavar="PATH",
    help="With --detach: where logs go (default: jobd.log beside the pid file).",
)
@pass_ctx
def run(
    ctx: Context,
    once: bool,
    log_level: str,
    log_format: str,
    detach: bool,
    pidfile: str | None,
    log_file: str | None,
) -> None:
    """Run the daemon in the foreground (under systemd, launchd or a terminal).

    SIGTERM or SIGINT stop it gracefully; SIGHUP reloads the config.

    \b
    Examples:
      jobd run --config contrib/examples/jobd.toml
      jobd run --detach --pidfile /run/jobd.pid --log-file /var/log/jobd.log
    """
    from jobd.store import mask_url
    from jobd.system.log import add_secrets, add_store_url, setup_logging

    if (pidfile or log_file) and not detach:
        raise UsageError("--pidfile and --log-file go with --detach")
    if detach and not pidfile:
        raise UsageError("--detach needs --pidfile PATH")
    if once:
        setup_logging(log_format, log_level)
        _apply(ctx, serving=False).log(mask_url)
        return

    from jobd.system.sdnotify import Notifier
    from jobd.system.signals import SignalFlags

    # SIGTERM and SIGINT stop a daemon that is still waiting for its store, at
    # once, and are passed on to a start-up child (which dies of them).
    child = [0]
    flags = SignalFlags(lambda: _pass_on_stop(flags, child[0]))
    flags.install()
    notifier = Notifier.from_env()
    setup_logging(log_format, log_level)
    applied = _apply_when_the_store_answers(ctx, flags, notifier, child, log_format, log_level)
    if applied is None:
        return  # stopped while waiting
    ctx._config = config = applied.config
    if detach:
        assert pidfile is not None
        _enter_background(ctx, config, pidfile, log_file)
    setup_logging(log_format, log_level)
    add_store_url(applied.store_url)
    add_secrets(applied.secrets)
    applied.log(mask_url)
    _serve(ctx, applied, flags, notifier)


def _apply_when_the_store_answers(
    ctx: Context,
    flags: SignalFlags,
    notifier: Notifier,
    child: list[int],
    log_format: str,
    log_level: str,
) -> Applied | None:
    """Parse the config and apply it to the store, in a child process; while the
    store does not answer, wait for it here. None: stopped while waiting."""
    from jobd.system.log import add_store_url
    from jobd.system.storewait import PROBE_EVERY, StartupWait

    prepare = functools.partial(_prepare, ctx, os.getpid(), log_format, log_level)
    # Parsing and applying happen before detaching, so their errors reach the
    # terminal, and in a child process, so the daemon's memory never holds
    # 10,000 jobs' worth of parsed config (jobd.system.forkcall). A store that does not
    # answer is waited for here, in the foreground: the child reports it, this
    # process tries the store until it answers, then the child applies again.
    wait: StartupWait | None = None
    while True:
        # Held back over the fork, so that each process meets a stop signal with the
        # right handler: this one once it knows the child's pid, the child once it
        # dies of one.
        _hold_stop_signals(True)
        try:
            prepared = call_in_child(prepare, started=lambda pid: _child_started(child, pid))
        except JobdError:
            if flags.stop_requests:
                return None  # the child was stopped with us
            raise
        finally:
            child[0] = 0
            _hold_stop_signals(False)
        if flags.stop_requests:
            return None
        if isinstance(prepared, Applied):
            return prepared
        add_store_url(prepared.store_url)
        wait = wait or StartupWait(
            prepared.store_url,
            prepared.max_backoff,
            notifier,
            # SIGHUP reads the config again (a corrected store URL, say).
            lambda: flags.stop_requests > 0 or flags.reload_requested,
        )
        wait.failed(prepared.reason)
        probe = functools.partial(_probe, prepared.store_url)
        if not wait.pause(PROBE_EVERY) or wait.attempt(probe) is None:
            if flags.stop_requests:
                return None
            flags.reload_requested = False
            logging.getLogger("jobd").info(
                "reading the config again while waiting for the store",
                extra={"action": "config.reload"},
            )
            wait = None  # its store URL may have changed


def _prepare(ctx: Context, parent: int, log_format: str, log_level: str) -> Applied | StoreDown:
    """What the start-up child does: parse the config and apply it to the store."""
    from jobd.system.log import setup_logging

    if os.getpid() != parent:  # where fork() exists, this runs in a child
        _stop_signals_kill()
    setup_logging(log_format, log_level)  # a migration's messages reach the terminal
    try:
        return _apply_or_report(ctx)
    finally:
        ctx.close()


def _enter_background(ctx: Context, config: Config, pidfile: str, log_file: str | None) -> None:
    from pathlib import Path

    from jobd.system.detach import detach

    if config.path and Path(config.path).is_file():
        # The daemon runs in /, so a reload must find the same file by its full path.
        ctx.config_path = str(Path(config.path).absolute())
    target = log_file or str(Path(pidfile).absolute().with_name("jobd.log"))
    detach(pidfile, str(Path(target).absolute()))


def _serve(ctx: Context, applied: Applied, flags: SignalFlags, notifier: Notifier) -> None:
    """Open the store (it may have gone away again since the child applied the
    config), serve the API when `[api]` asks for it, and run the daemon's loop."""
    from jobd.system.log import add_secrets
    from jobd.system.paths import load_config
    from jobd.system.storewait import StartupWait

    config = applied.config
    wait = StartupWait(
        applied.store_url, config.settings.max_backoff, notifier, lambda: flags.stop_requests > 0
    )
    store = wait.attempt(lambda: ctx.store)
    if store is None:
        return
    # Only now: opening the store loaded the ORM with its backend's driver alone
    # (jobd.store.drivers), and the daemon imports the ORM.
    from jobd.daemon.loop import serve

    api: Any = None

    def reload_config() -> Config:
        fresh = load_config(ctx.config_path, store_override=ctx.store_override)
        add_secrets(value for spec in fresh.jobs.values() for value in spec.env.values())
        if api is not None:
            api.reload_tls(fresh.api, str(fresh.path))
        return fresh

    if config.api is not None:  # only then is the web stack imported
        from jobd.cli.serve_cmd import start_api_thread

        api = start_api_thread(ctx, applied.store_url, config.api)
    try:
        serve(
            config,
            store,
            reload_config=reload_config,
            applied_at=applied.applied_at,
            file_digests=applied.digests,
            flags=flags,
        )
    finally:
        if api is not None:
            api.close()


@dataclasses.dataclass
class Applied:
    """What the daemon keeps of its config once the jobs are in the store."""

    config: Config  # without its jobs: the daemon reads those from the store
    digests: dict[str, str]  # ... and runs a config job only if it is still this
    store_url: str
    secrets: list[str]
    applied_at: datetime
    jobs: int
    added: int
    updated: int
    removed: int

    def log(self, mask_url: Callable[[str], str]) -> None:
        logging.getLogger("jobd").info(
            "config %s applied to store %s: %d jobs (%d added, %d updated, %d removed)",
            self.config.path,
            mask_url(self.store_url),
            self.jobs,
            self.added,
            self.updated,
            self.removed,
            extra={"action": "config.apply"},
        )


def _apply(ctx: Context, serving: bool = True) -> Applied:
    """Parse the config and write its jobs to the store (`jobd run` creates a SQLite
    store's missing directory, as it creates the file). `serving`: the daemon will
    serve `[api]`, whose certificate and key are checked here too."""
    from jobd.system.log import add_store_url
    from jobd.system.storewait import create_store_directory

    config = ctx.config
    if serving and config.api is not None and config.api.tls_cert:
        # Here, before the daemon detaches: a key it cannot use is said on the terminal.
        from jobd.system.tls import server_context

        server_context(config.api.tls_cert, config.api.tls_key, str(config.path))
    store_url = ctx.store_url
    add_store_url(store_url)
    create_store_directory(store_url)
    store = ctx.store
    applied_at = store.now()
    report = store.apply_config(config, applied_at)
    if report.restored:
        logging.getLogger("jobd").warning(
            "config jobs changed in the store outside jobd, restored from the file: %s",
            ", ".join(report.restored),
            extra={"action": "config.restored"},
        )
    return Applied(
        config=dataclasses.replace(config, jobs={}),
        digests=config.digests(),
        store_url=store_url,
        secrets=[value for spec in config.jobs.values() for value in spec.env.values()],
        applied_at=applied_at,
        jobs=len(config.jobs),
        added=len(report.added),
        updated=len(report.updated),
        removed=len(report.removed),
    )


def _apply_or_report(ctx: Context) -> Applied | StoreDown:
    """_apply, or, when the store does not answer, what the parent waits for.

    `jobd run` creates a SQLite store's missing directory; an error waiting
    cannot fix (see jobd.system.storewait) is raised, and exits 2."""
    from jobd.store.urls import backend_of
    from jobd.system.storewait import StoreDown, is_passing, reason_of, refused

    config = ctx.config  # a config error is raised as it is
    store_url = ctx.store_url
    try:
        return _apply(ctx)
    except Exception as exc:
        try:
            backend = backend_of(store_url)
        except JobdError:
            raise refused(exc) from None
        if is_passing(exc, backend):
            return StoreDown(store_url, reason_of(exc, store_url), config.settings.max_backoff)
        raise refused(exc) from None


def _probe(store_url: str) -> bool:
    """Whether the store answers: opened (and migrated) and closed again, in this
    process, which forks the start-up child next and so must hold no connection."""
    from jobd.store import open_store
    from jobd.store.drivers import load_orm
    from jobd.store.urls import backend_of

    backend = backend_of(store_url)
    load_orm(backend)
    store = open_store(store_url)
    try:
        if backend == "sqlite":
            # Readers pass a lock that stops writers: ask for the write lock itself.
            store.db.execute_sql("BEGIN IMMEDIATE")
            store.db.execute_sql("ROLLBACK")
    finally:
        store.close()
    return True


def _stop_signals_kill() -> None:
    """In the start-up child: SIGTERM and SIGINT end it, as for any short command
    (the parent's handlers, inherited by fork, would only set a flag)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _hold_stop_signals(False)


def _hold_stop_signals(hold: bool) -> None:
    import signal

    how = signal.SIG_BLOCK if hold else signal.SIG_UNBLOCK
    signal.pthread_sigmask(how, {signal.SIGTERM, signal.SIGINT})


def _child_started(child: list[int], pid: int) -> None:
    child[0] = pid
    _hold_stop_signals(False)  # a stop that came meanwhile is passed on now


def _pass_on_stop(flags: SignalFlags, child: int) -> None:
    import contextlib
    import signal

    if flags.stop_requests and child:
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGTERM)


COMMANDS = [run]
