"""What jobd's own job children (sqlrunner, httprunner) print, and how the runner
reads it back: a failed run's last line is `error: <message>`, which becomes the
run's error. Values filled in from the environment are masked first."""

from __future__ import annotations

from collections.abc import Iterable

ERROR_PREFIX = "error: "
MASK = "***"


class Masker:
    """Replaces every secret it was given with ***, longest first, so that a secret
    containing another is masked whole."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets: list[str] = []
        self.add(secrets)

    def add(self, values: Iterable[str]) -> None:
        self.secrets = sorted({*self.secrets, *(v for v in values if v)}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text


def fail(message: str, masker: Masker | None = None) -> int:
    """Print the run's error line (one line, masked) and return the exit status."""
    text = masker(message) if masker else message
    print(ERROR_PREFIX + " ".join(text.split()), flush=True)
    return 1


def error_line(output: str) -> str | None:
    """The error a child reported on its last line of output, if it did."""
    last = output.rstrip("\n").rsplit("\n", 1)[-1]
    return last[len(ERROR_PREFIX) :] if last.startswith(ERROR_PREFIX) else None
