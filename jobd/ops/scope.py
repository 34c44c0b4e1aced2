"""What an operation acts on: the store, the config file's view of the jobs,
and what a broken config file left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobd.errors import ConfigError, NotApplied, NotFound, did_you_mean

if TYPE_CHECKING:
    from jobd.core.model import Config, GroupQuota, JobSpec
    from jobd.store import JobRecord, Store


@dataclass
class Scope:
    store: Store
    # The config file's jobs, groups and settings; only its [jobd] settings when
    # the file is broken (then `config_problem` says why).
    config: Config
    config_problem: ConfigError | None = None

    def find_job(self, name: str) -> tuple[JobRecord | None, JobSpec | None]:
        """The store's record of NAME (None when no daemon applied it yet) and the
        config file's definition (None for a store-only job, or a broken file).
        Neither is NotFound, with a did-you-mean over both."""
        record = self.store.job(name)
        if record is not None and record.removed:
            record = None
        spec = self.config.jobs.get(name)
        if record is None and spec is None:
            names = {*self.config.jobs, *(r.name for r in self.store.jobs())}
            hint = did_you_mean(name, sorted(names))
            if self.config_problem is not None:
                hint = "the config file is broken, so its jobs are unknown"
            raise NotFound(f"unknown job {name!r}" + (f" ({hint})" if hint else ""))
        return record, spec

    def not_applied(self, name: str) -> NotApplied:
        """Why a daemon would not run NAME: the config file has it, the store not yet."""
        return NotApplied(
            f"job {name!r} is in {self.config.path} but no daemon has applied "
            "it to the store yet: start `jobd run`, or reload the running daemon "
            "(SIGHUP, `systemctl reload jobd`)"
        )

    def group_quota(self, group: str | None) -> GroupQuota | None:
        """The [groups.GROUP] quota of a job's group; a broken file that may hold
        it refuses rather than ignores it."""
        if group is None:
            return None
        if self.config_problem is not None and group not in self.config.groups:
            raise self.config_problem
        return self.config.groups.get(group)

    def whole_config(self) -> Config:
        """The config with its jobs, for operations that need them: an error when
        the file is broken."""
        if self.config_problem is not None:
            raise self.config_problem
        return self.config
