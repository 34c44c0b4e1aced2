"""A descriptor that becomes readable when the wall clock is stepped (Linux).

A daemon sleeping until a fire hours away would not notice `date -s` or an NTP
step until it woke; the usual cure is waking every minute. Like systemd's timers,
jobd instead asks the kernel: a CLOCK_REALTIME timerfd armed with
TFD_TIMER_CANCEL_ON_SET is cancelled, and turns readable, the moment the clock is
set. Python gains os.timerfd_create only in 3.13, hence the two libc calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys

CLOCK_REALTIME = 0
TFD_CLOEXEC = 0o2000000
TFD_NONBLOCK = 0o4000
TFD_TIMER_ABSTIME = 1
TFD_TIMER_CANCEL_ON_SET = 2
FAR_AWAY = 2**31 - 1  # 2038: armed to never expire, only to be cancelled


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class ClockStepWatch:
    """open() -> the descriptor, or None where the kernel cannot do this."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self._libc: ctypes.CDLL | None = None

    def open(self) -> int | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC)
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        self._libc, self.fd = libc, fd
        if not self._arm():
            self.close()
            return None
        return fd

    def _arm(self) -> bool:
        assert self._libc is not None and self.fd is not None
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(FAR_AWAY, 0))
        flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
        return self._libc.timerfd_settime(self.fd, flags, ctypes.byref(spec), None) == 0

    def stepped(self) -> bool:
        """After the descriptor turned readable: True when the clock was set. Re-arms."""
        assert self.fd is not None
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            return False
        except OSError:  # ECANCELED: the clock was set
            self._arm()
            return True
        self._arm()  # it expired (only in 2038): arm again
        return False

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
