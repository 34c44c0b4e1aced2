"""What the executor tells about runs, passed on to metrics and notifications.

The executor calls it at each start and each recorded end, from the daemon's
threads; each receiver only counts or queues, so a run never waits for either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobd.core.model import JobSpec, Outcome, Run
    from jobd.observe.dispatcher import Notifications
    from jobd.observe.metrics import InstanceMetrics


class RunObserver:
    def __init__(self, metrics: InstanceMetrics, notifications: Notifications) -> None:
        self.metrics = metrics
        self.notifications = notifications

    def run_started(self, run: Run, spec: JobSpec) -> None:
        self.metrics.run_started(run)
        self.notifications.run_started(run, spec)

    def run_ended(
        self, run: Run, spec: JobSpec, outcome: Outcome, retried: bool, lasted: float | None
    ) -> None:
        """`retried`: a retry of it is queued; `lasted`: seconds, start to end."""
        self.metrics.run_ended(run, outcome, lasted)
        self.notifications.run_ended(run, spec, retried)

    def run_abandoned(self, run: Run) -> None:
        """Another instance's run, found abandoned by this one."""
        self.metrics.run_abandoned(run)
        self.notifications.run_abandoned(run)
