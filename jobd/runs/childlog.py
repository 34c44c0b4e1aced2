"""What jobd's own job children (sqlrunner, httprunner) print, and how the runner
reads it back: a failed run's last line is `error: <message>`, which becomes the
run's error. Values filled in from the environment are masked first."""

from __future__ import annotations

from jobd.core.masking import Masker

ERROR_PREFIX = "error: "


def fail(message: str, masker: Masker | None = None) -> int:
    """Print the run's error line (one line, masked) and return the exit status."""
    text = masker(message) if masker else message
    print(ERROR_PREFIX + " ".join(text.split()), flush=True)
    return 1


def error_line(output: str) -> str | None:
    """The error a child reported on its last line of output, if it did."""
    last = output.rstrip("\n").rsplit("\n", 1)[-1]
    return last[len(ERROR_PREFIX) :] if last.startswith(ERROR_PREFIX) else None
