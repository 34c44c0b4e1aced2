"""A descriptor that becomes readable when a file is unlinked or renamed (Linux).

A daemon whose SQLite store is deleted or replaced keeps writing into the file
it has open, which nobody will read again. It checks the store's identity at
each tick (jobd.store.files.StoreIdentity); an idle daemon may sleep for an hour,
so inotify wakes it the moment the file's link count changes (IN_ATTRIB: unlink,
a rename over it) or the file moves, and the check says what happened. The
daemon's own writes change neither. Python has no inotify binding, hence libc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
IN_ATTRIB = 0x004
IN_MOVE_SELF = 0x800
IN_DELETE_SELF = 0x400
IN_DONT_FOLLOW = 0x02000000


class FileWatch:
    """open(path) -> the descriptor, or None where the kernel cannot do this."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def open(self, path: str) -> int | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        mask = IN_ATTRIB | IN_MOVE_SELF | IN_DELETE_SELF | IN_DONT_FOLLOW
        if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            os.close(fd)
            return None
        self.fd = fd
        return fd

    def drain(self) -> None:
        assert self.fd is not None
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
