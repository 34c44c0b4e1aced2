"""Secrets replaced by *** in what jobd shows: the one masker behind the daemon's
log, a run's captured output and jobd's own child runners (sql, http).

A secret is masked in every form output commonly gives it: as written, and as
URL encoding (a token in a query string, `a%20b`, `a+b`) and JSON encoding
(`a\\"b`) write it. Masking a value cut in two by a buffer's edge is the
caller's window to get right; `mask_bytes` takes the window's start so that a
secret reaching into it from before is masked whole. Pure, thread-safe.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from typing import AnyStr
from urllib.parse import quote, quote_plus

MASK = "***"

# Credentials in any URL or DSN, registered or not: scheme://user:PASSWORD@host
# and libpq's ?password=... / key=value password=... forms.
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s:/@]*:)([^\s@/]+)(@)")
_PARAM_PASSWORD = re.compile(r"(\bpassword=)([^\s&;]+)", re.IGNORECASE)


def encoded_forms(secret: str) -> set[str]:
    """The secret as written and as URL and JSON encoding write it."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")}
    forms.add(json.dumps(secret)[1:-1])
    forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
    # Percent-encoding with lower-case hex digits is as valid, and some encoders use it.
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), f) for f in set(forms)}
    return {form for form in forms if form}


class Masker:
    """Replaces every registered secret, in each of its encoded forms, with ***.

    Overlapping secrets are masked as one span, so no part of either shows.
    Values shorter than `min_length` are not registered: the daemon's log
    registers every env value, and masking each short word and number in it
    would protect nothing a guess would not find. With `url_passwords`, the
    password of any URL or DSN in the text is masked too, registered or not.
    """

    def __init__(
        self, secrets: Iterable[str] = (), min_length: int = 1, url_passwords: bool = False
    ) -> None:
        self.min_length = min_length
        self.url_passwords = url_passwords
        self._lock = threading.Lock()  # for add(); mask() reads without it
        self._values: frozenset[str] = frozenset()
        # (text pattern, bytes pattern, longest form, the forms as bytes), replaced
        # whole on add(), so that a reader in another thread sees the old or the new.
        self._patterns: tuple[re.Pattern[str], re.Pattern[bytes], int, tuple[bytes, ...]] | None = (
            None
        )
        self.add(secrets)

    @property
    def longest(self) -> int:
        """The length in bytes of the longest form: how far a secret can reach back."""
        return self._patterns[2] if self._patterns else 0

    def add(self, values: Iterable[str]) -> None:
        fresh = {v for v in values if isinstance(v, str) and len(v) >= self.min_length}
        if fresh <= self._values:
            return
        with self._lock:
            self._compile(self._values | fresh)

    def _compile(self, values_now: frozenset[str]) -> None:
        forms = {form for value in values_now for form in encoded_forms(value)}
        # Longest first: at one position the longest secret is the one masked.
        ordered = sorted(forms, key=len, reverse=True)
        text = "|".join(map(re.escape, ordered))
        data = b"|".join(re.escape(form.encode()) for form in ordered)
        # A lookahead finds every start, overlapping ones included.
        self._patterns = (
            re.compile(f"(?=({text}))"),
            re.compile(b"(?=(" + data + b"))"),
            max(len(form.encode()) for form in ordered),
            tuple(form.encode() for form in ordered),
        )
        self._values = values_now

    def clear(self) -> None:
        with self._lock:
            self._patterns = None
            self._values = frozenset()

    def __call__(self, text: str) -> str:
        return self.mask(text)

    def mask(self, text: str) -> str:
        patterns = self._patterns
        if patterns is not None:
            text = _replace(text, _spans(patterns[0], text, 0), 0, MASK)
        if self.url_passwords:
            # Most lines hold neither a URL nor a password parameter: skip those scans.
            if "://" in text:
                text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
            if "password=" in text.lower():
                text = _PARAM_PASSWORD.sub(rf"\g<1>{MASK}", text)
        return text

    def mask_bytes(self, data: bytes, start: int = 0) -> bytes:
        """data[start:] masked; a secret that begins before `start` and reaches
        past it is masked too (masking after the cut would leak its rest)."""
        patterns = self._patterns
        if patterns is None:
            return data[start:]
        begin = max(0, start - patterns[2] + 1)
        return _replace(data, _spans(patterns[1], data, begin), start, MASK.encode())

    def unfinished(self, data: bytes) -> int:
        """How many bytes at the end of `data` may be the start of a secret still
        being written: output that cannot be shown yet, masked or not."""
        patterns = self._patterns
        if patterns is None:
            return 0
        tail = data[-patterns[2] :]
        for size in range(min(len(tail), patterns[2] - 1), 0, -1):
            end = tail[-size:]
            if any(len(form) > size and form.startswith(end) for form in patterns[3]):
                return size
        return 0


def _spans(pattern: re.Pattern[AnyStr], data: AnyStr, begin: int) -> list[tuple[int, int]]:
    """Where the secrets are, overlapping matches merged."""
    merged: list[tuple[int, int]] = []
    for match in pattern.finditer(data, begin):
        at, end = match.start(), match.start() + len(match.group(1))
        if merged and at <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((at, end))
    return merged


def _replace(data: AnyStr, spans: list[tuple[int, int]], start: int, mask: AnyStr) -> AnyStr:
    """data[start:] with each span replaced by `mask`."""
    if not spans:
        return data[start:]
    parts = []
    pos = start
    for at, end in spans:
        if end <= pos:
            continue
        parts.append(data[pos : max(at, pos)])
        parts.append(mask)
        pos = end
    parts.append(data[pos:])
    return data[:0].join(parts)
