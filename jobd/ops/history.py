"""Operations on recorded history: prune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobd.ops.scope import Scope

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Pruned:
    dry_run: bool
    keep: int  # runs kept per job; 0: no count limit
    max_age: float  # seconds; 0: no age limit
    deleted: dict[str, int]  # per job (each limit counted on its own in a dry run)
    by_group: dict[str, int]  # deleted for each group's max_retained

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def prune(
    scope: Scope, actor: str, keep: int | None, max_age: float | None, dry_run: bool = False
) -> Pruned:
    """Delete finished runs beyond the newest `keep` per job, older than `max_age`
    seconds, and beyond each group's max_retained (defaults: [jobd] history);
    queued and running runs stay. Audited unless a dry run."""
    from jobd.store import admin

    config = scope.whole_config()  # retention lives in the file: never guess it
    keep_n = config.settings.history_keep if keep is None else keep
    age = config.settings.history_max_age if max_age is None else max_age
    store = scope.store
    counts = admin.prune(store, keep_n or None, age or None, store.now(), dry_run=dry_run)
    by_group: dict[str, int] = {}
    if config.groups:
        from jobd.store.groups import prune_retained

        for quota in config.groups.values():
            deleted = prune_retained(store, quota, dry_run=dry_run)
            if deleted:
                by_group[quota.name] = sum(deleted.values())
            for job, n in deleted.items():
                counts[job] = counts.get(job, 0) + n
    pruned = Pruned(dry_run, keep_n, age, counts, by_group)
    if not dry_run:
        detail: dict[str, Any] = {"keep": keep_n, "older_than_s": age, "deleted": pruned.total}
        if by_group:
            detail["groups"] = by_group
        store.audit("prune", actor, None, detail)
    return pruned
