"""`jobd run --detach --pidfile P`: the classic double-fork daemon, via python-daemon.

Only for hosts without a service manager. Under systemd or launchd never detach:
they track the process they started, and a detached child breaks Type=notify,
KillMode and KeepAlive.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from jobd.errors import UsageError
from jobd.system.liveness import pid_alive


def held_by(pidfile: Path) -> int | None:
    """The live process holding `pidfile`, or None when it is free or stale."""
    try:
        pid = int(pidfile.read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and pid_alive(pid) else None


def detach(pidfile: str, log_file: str) -> Any:
    """Enter the daemon context: fork, new session, chdir /, pidfile locked. Returns it."""
    import daemon
    import daemon.pidfile

    path = Path(pidfile).absolute()
    if not path.parent.is_dir():
        raise UsageError(f"--pidfile {path}: directory does not exist")
    holder = held_by(path)
    if holder is not None:
        raise UsageError(f"--pidfile {path}: jobd is already running as pid {holder}")
    lock = daemon.pidfile.TimeoutPIDLockFile(str(path), acquire_timeout=0)
    if path.exists():
        lock.break_lock()  # stale: its process is gone
    log = open(log_file, "a", buffering=1)  # noqa: SIM115 - kept open for the daemon's life
    context = daemon.DaemonContext(
        pidfile=lock,
        umask=0o027,
        working_directory="/",
        stdout=log,
        stderr=log,
        detach_process=True,
        # Its default map ends the process on SIGTERM; jobd's own handlers (installed
        # before detaching, see jobd.system.signals) stop it gracefully instead.
        signal_map={signal.SIGTSTP: None, signal.SIGTTIN: None, signal.SIGTTOU: None},
    )
    context.open()
    return context
