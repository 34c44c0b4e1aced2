"""Is the service healthy? The criteria of `jobd check`, and of the API's /readyz
for the part that is about the service rather than a job."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from jobd.core.timeutil import ago
from jobd.ops.scope import Scope
from jobd.store import admin

# What a probe of the service itself looks at: a failing or overdue job does not
# make the service unready, a missing daemon or an expired leader lease does.
SERVICE_CHECKS = frozenset(("instances", "leader"))


@dataclass(frozen=True)
class Problem:
    check: str  # config, instances, leader, overdue, failing
    message: str
    job: str | None = None


@dataclass(frozen=True)
class Health:
    problems: tuple[Problem, ...]
    live_instances: int
    jobs: int
    checked_at: datetime  # by the store's clock

    @property
    def healthy(self) -> bool:
        return not self.problems

    def service_problems(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.check in SERVICE_CHECKS)


def health(scope: Scope, with_jobs: bool = True) -> Health:
    """Unhealthy: a config file that no longer parses (the daemon runs on its last
    good config, but would not restart); no live instance; an expired leader
    lease; and with `with_jobs`, a job overdue by more than max(60s, 2 x
    lease_ttl) while not paused, or one whose last run did not succeed."""
    store = scope.store
    now = store.now()
    ttl = scope.config.settings.lease_ttl
    problems: list[Problem] = []
    if scope.config_problem is not None:
        problems.append(Problem("config", f"config file broken: {scope.config_problem}"))
    live = admin.live_instances(store, ttl, now)
    if not live:
        last = admin.last_heartbeat(store)
        seen = f"last heartbeat {ago(last, now)}" if last else "none ever started"
        problems.append(Problem("instances", f"no live instance ({seen})"))
    lease = admin.leader_lease(store, now)
    if lease is not None and lease["expired"]:
        problems.append(
            Problem(
                "leader",
                f"leader lease expired {ago(lease['expires_at'], now)} "
                f"(last holder {lease['holder']} on {lease['host']})",
            )
        )
    names: list[str] = []
    if with_jobs:
        grace = max(60.0, 2 * ttl)
        for job in admin.overdue(store, now - timedelta(seconds=grace)):
            late = ago(job["due"], now)
            problems.append(
                Problem("overdue", f"{job['job']} should have fired {late}", job["job"])
            )
        names = [record.name for record in store.jobs()]
        for name, last_run in admin.last_outcomes(store, names).items():
            if last_run["status"] != "succeeded":
                message = f"{name}: last run {last_run['id']} {last_run['status']}"
                problems.append(Problem("failing", message, name))
    return Health(tuple(problems), len(live), len(names), now)
