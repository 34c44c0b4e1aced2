"""Parsed job specs, kept for one daemon tick.

Within one tick the same spec is read more than once (a fire, then its run's
claim), and a daemon reads a thousand due jobs at a time: each stored text is
parsed once per tick. The cache belongs to one Store, never to the process,
and the daemon forgets it after every tick, so a spec changed in the store is
read afresh at the next one.
"""

from __future__ import annotations

from jobd.core.model import JobSpec

# Bounds a caller that never forgets; the daemon forgets after every tick.
MAX_KEPT = 65536


class SpecCache:
    def __init__(self) -> None:
        self._by_text: dict[str, JobSpec] = {}
        # The same specs by the hash of their text, so that a claim in the tick of
        # its fire knows the spec from the jobs row's hash alone.
        self._by_hash: dict[str, JobSpec] = {}

    def parse(self, text: str) -> JobSpec:
        """The spec stored as `text` (specs are frozen: sharing one is safe)."""
        spec = self._by_text.get(text)
        if spec is None:
            if len(self._by_text) >= MAX_KEPT:
                self._by_text.clear()
            spec = self._by_text[text] = JobSpec.from_json(text)
        return spec

    def remember(self, text_hash: str, spec: JobSpec) -> None:
        if len(self._by_hash) >= MAX_KEPT:
            self._by_hash.clear()
        self._by_hash[text_hash] = spec

    def by_hash(self, text_hash: str) -> JobSpec | None:
        return self._by_hash.get(text_hash)

    def forget(self) -> None:
        self._by_text.clear()
        self._by_hash.clear()
