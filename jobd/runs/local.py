"""`jobd trigger --local`: run one queued execution in a child of this command,
through the daemon's executor, recorded in the same store."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from jobd import __version__
from jobd.core.model import Config, JobSpec, Outcome, Status
from jobd.errors import InvalidState
from jobd.runs.executor import Executor
from jobd.store import Store
from jobd.system.liveness import InstanceLock

POLL = 0.1


def run_local(store: Store, config: Config, run_id: int, spec: JobSpec | None = None) -> Outcome:
    """Run queued execution `run_id` here: its job's stored definition, or `spec`."""
    # The executor logs for the daemon; here the command reports the outcome itself.
    logger = logging.getLogger("jobd")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    host = socket.gethostname()
    instance = f"{host}-{os.getpid()}-local-{uuid.uuid4().hex[:6]}"
    lock = _hold_liveness_lock(store, instance)
    store.register_instance(instance, host, os.getpid(), __version__)
    if lock is not None:
        store.wake_daemons()  # idle daemons start watching this instance's lock
    try:
        claimed = store.claim_run(run_id, instance, host, spec)
        if claimed is None:
            raise InvalidState(f"execution {run_id} is no longer queued (a daemon took it?)")
        executor = Executor(store, instance, config.settings)
        admitted = executor.admit([claimed], config.digests())
        if not admitted:
            executor.flush()
            refused = store.execution(run_id)
            assert refused is not None
            return Outcome(refused.status, error=refused.error)
        run, spec = admitted[0]
        process = executor.start(run, spec)
        heartbeat_every = max(0.2, config.settings.lease_ttl / 3)
        next_heartbeat = time.monotonic() + heartbeat_every
        try:
            while process.is_alive() or executor.busy:
                process.join(POLL)
                executor.flush()
                executor.check_cancels()
                if time.monotonic() >= next_heartbeat:
                    store.heartbeat(instance, "local", executor.busy)
                    next_heartbeat = time.monotonic() + heartbeat_every
        except KeyboardInterrupt:
            process.stop(Status.CANCELLED, "cancelled: the local trigger was interrupted")
            process.join()
            executor.flush()
            raise
        executor.flush()
        finished = store.execution(run_id)
        assert finished is not None
        return Outcome(finished.status, finished.exit_code, finished.signal, finished.error)
    finally:
        # A one-shot instance leaves no row behind (status would list it for a day).
        store.remove_instance(instance)
        if lock is not None:
            lock.release()


def _hold_liveness_lock(store: Store, instance: str) -> InstanceLock | None:
    """SQLite: a daemon learns of this command's death from its lock at once."""
    directory = store.instance_lock_dir()
    if directory is None:
        return None
    lock = InstanceLock(directory, instance)
    try:
        lock.acquire()
    except OSError:
        return None  # judged by its heartbeat, as before
    return lock
