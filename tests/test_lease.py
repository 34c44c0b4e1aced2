"""The table lease and its fencing, on both backends: acquire, renew, expiry
takeover by the database's clock, epochs, stale writes refused; and the
TableLeader's step-down and clock-skew rules on a fake clock."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobd.core.config.parse import parse_config
from jobd.core.model import NewRun, Trigger
from jobd.core.timeutil import to_db
from jobd.leader.lease import TableLeader
from jobd.store.admin import leader_lease
from jobd.store.lease import LeaseLost
from jobd.system.clock import Clock
from tests.conftest import open_store, wait_for

TTL = 5.0


def expire(store: Any) -> None:
    """Move the lease's expiry into the past, as if its holder had stopped renewing."""
    past = store.now() - timedelta(seconds=1)
    store.m.Lease.update(expires_at=to_db(past)).execute()


def test_first_acquire_takes_the_lease(store: Any) -> None:
    state = store.acquire_lease("a", "host-a", TTL)
    assert state.held and state.holder == "a" and state.epoch == 1
    assert state.expires_at - state.db_now == timedelta(seconds=TTL)
    assert leader_lease(store, store.now())["holder"] == "a"


def test_renewal_keeps_the_epoch_and_moves_the_expiry(store: Any) -> None:
    first = store.acquire_lease("a", "host-a", TTL)
    second = wait_for(
        lambda: (s := store.acquire_lease("a", "host-a", TTL)).db_now > first.db_now and s
    )
    assert second.held and second.epoch == first.epoch
    assert second.expires_at > first.expires_at
    assert leader_lease(store, store.now())["acquired_at"] == first.db_now


def test_a_standby_cannot_take_an_unexpired_lease_and_learns_when_to_ask(store: Any) -> None:
    store.acquire_lease("a", "host-a", TTL)
    state = store.acquire_lease("b", "host-b", TTL)
    assert not state.held
    assert state.holder == "a" and state.epoch == 1
    assert TTL - 1 < state.seconds_left <= TTL
    assert leader_lease(store, store.now())["holder"] == "a"


def test_an_expired_lease_is_taken_over_with_the_next_epoch(store: Any) -> None:
    store.acquire_lease("a", "host-a", TTL)
    expire(store)
    state = store.acquire_lease("b", "host-b", TTL)
    assert state.held and state.holder == "b" and state.epoch == 2
    assert not store.acquire_lease("a", "host-a", TTL).held


def test_expiry_is_judged_by_the_database_clock(store: Any) -> None:
    store.acquire_lease("a", "host-a", 0.3)
    assert not store.acquire_lease("b", "host-b", TTL).held
    taken = wait_for(lambda: store.acquire_lease("b", "host-b", TTL).held, timeout=5)
    assert taken and leader_lease(store, store.now())["epoch"] == 2


def test_every_change_of_holder_increments_the_epoch(store: Any) -> None:
    epochs = [store.acquire_lease("a", "h", TTL).epoch]
    store.release_lease("a")
    epochs.append(store.acquire_lease("b", "h", TTL).epoch)
    expire(store)
    epochs.append(store.acquire_lease("a", "h", TTL).epoch)
    # The same holder coming back to its own expired lease keeps its epoch:
    # nobody else led in between, so nothing it writes can clash.
    expire(store)
    epochs.append(store.acquire_lease("a", "h", TTL).epoch)
    assert epochs == [1, 2, 3, 3]


def test_release_frees_the_lease_at_once(store: Any) -> None:
    store.acquire_lease("a", "h", TTL)
    store.release_lease("b")  # not the holder: no effect
    assert leader_lease(store, store.now())["holder"] == "a"
    store.release_lease("a")
    state = store.lease_state("b")
    assert state.holder is None and state.seconds_left == 0
    assert store.acquire_lease("b", "h", TTL).held


def _config(store_url: str) -> Any:
    return parse_config(
        f'[jobd]\nstore = "{store_url}"\nleader = "table"\nlease_ttl = "5s"\n\n'
        '[jobs.tick]\nschedule = "* * * * * *"\ncommand = ["true"]\ncatchup = "all"\n'
    )


def _fire(store: Any, slot: datetime) -> list[NewRun]:
    return [NewRun(job="tick", trigger=Trigger.SCHEDULE, scheduled_for=slot, not_before=slot)]


def test_fencing_accepts_the_current_epoch_and_rejects_a_stale_one(
    store: Any, store_url: str
) -> None:
    now = store.now()
    store.apply_config(_config(store_url), now)
    old = store.acquire_lease("a", "h", TTL).epoch
    slot = now.replace(microsecond=0)
    assert store.record_fires(_fire(store, slot), {"tick": (slot, slot)}, epoch=old) == 1
    expire(store)
    new = store.acquire_lease("b", "h", TTL).epoch
    later = slot + timedelta(seconds=1)
    with pytest.raises(LeaseLost):
        store.record_fires(
            _fire(store, later), {"tick": (later + timedelta(seconds=1), later)}, epoch=old
        )
    runs = store.executions(job="tick", limit=None)
    assert [r.epoch for r in runs] == [old]
    assert store.job("tick").next_fire_at == slot  # the stale leader moved nothing
    assert store.record_fires(_fire(store, later), {"tick": (later, later)}, epoch=new) == 1


def test_a_fenced_fire_is_queued_at_the_store_clock_of_its_write(
    store: Any, store_url: str
) -> None:
    store.apply_config(_config(store_url), store.now())
    epoch = store.acquire_lease("a", "h", TTL).epoch
    slot = store.now().replace(microsecond=0) - timedelta(seconds=5)
    before = store.now()
    assert store.record_fires(_fire(store, slot), {"tick": (slot, slot)}, epoch=epoch) == 1
    after = store.now()
    [run] = store.executions(job="tick", limit=None)
    # The write's clock, not the slot's: a run due in the past is due at once.
    assert before <= run.queued_at <= after
    assert run.not_before == run.queued_at


def test_fencing_rejects_an_expired_lease_even_if_nobody_took_it(
    store: Any, store_url: str
) -> None:
    now = store.now()
    store.apply_config(_config(store_url), now)
    epoch = store.acquire_lease("a", "h", TTL).epoch
    expire(store)
    with pytest.raises(LeaseLost):
        store.record_fires(_fire(store, now), {}, epoch=epoch)
    assert store.executions(job="tick", limit=None) == []


def test_a_leader_paused_between_its_check_and_its_write_writes_nothing(
    store: Any, store_url: str
) -> None:
    from jobd.daemon.loop import Daemon

    config = _config(store_url)
    store.apply_config(config, store.now() - timedelta(seconds=5))
    other = open_store(store_url)
    paused = Daemon(config, store)
    newer = Daemon(config, other)
    try:
        assert paused.leader.poll()
        term = paused.leader.term()
        assert term is not None
        # Its lease runs out while it is stopped; a standby takes over.
        expire(store)
        assert newer.leader.poll()
        # It resumes right before writing: its own clock has not caught up yet,
        # so only the store's fencing can stop it.
        before = store.job("tick").next_fire_at
        paused.tick(paused.clock.now())
        assert store.executions(job="tick", limit=None) == []
        assert store.job("tick").next_fire_at == before
        assert paused.leader.term() is None
        newer.tick(newer.clock.now())
        epochs = {r.epoch for r in store.executions(job="tick", limit=None)}
        assert epochs == {newer.leader.term().epoch}
    finally:
        for daemon in (paused, newer):
            daemon.executor.stop_all("test over")
            daemon.waker.close()
        other.close()


class FakeClock(Clock):
    def __init__(self, offset: float = 0.0) -> None:
        super().__init__(offset)
        self.mono = 1000.0

    def monotonic(self) -> float:
        return self.mono


def _leader(store: Any, name: str = "a", offset: float = 0.0, max_skew: float = 30.0) -> Any:
    clock = FakeClock(offset)
    return TableLeader(store, name, "host", TTL, max_skew, clock), clock


def test_a_holder_that_cannot_renew_steps_down_before_the_lease_expires(store: Any) -> None:
    leader, clock = _leader(store)
    assert leader.poll() and leader.term().epoch == 1
    assert leader.next_poll_in() == pytest.approx(TTL / 3)
    clock.mono += TTL - leader.margin - 0.01
    assert leader.leading
    clock.mono += 0.02
    assert not leader.leading and leader.term() is None


def test_release_after_stepping_down_frees_a_lease_still_in_our_name(store: Any) -> None:
    leader, clock = _leader(store)
    assert leader.poll()
    clock.mono += TTL
    assert not leader.leading
    assert leader_lease(store, store.now())["holder"] == "a"  # the database still gives it a margin
    leader.release()
    assert leader_lease(store, store.now())["holder"] is None


def test_a_standby_asks_again_when_the_lease_expires(store: Any) -> None:
    holder, _ = _leader(store, "a")
    standby, _ = _leader(store, "b")
    assert holder.poll()
    assert not standby.poll()
    assert standby.next_poll_in() <= 1.0
    store.release_lease("a")
    assert standby.poll() and standby.term().epoch == 2


def test_skew_beyond_the_limit_refuses_to_lead_without_touching_the_lease(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    leader, _ = _leader(store, offset=40.0)
    with caplog.at_level(logging.WARNING, logger="jobd"):
        assert not leader.poll()
        assert not leader.poll()
    assert leader.clock_skew == pytest.approx(40.0, abs=1.0)
    assert (
        leader_lease(store, store.now()) is None
        or leader_lease(store, store.now())["holder"] is None
    )
    refusals = [r for r in caplog.records if "refusing to lead" in r.getMessage()]
    assert len(refusals) == 1  # said once, not every poll


def test_skew_above_two_seconds_warns_and_still_leads(
    store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    leader, _ = _leader(store, offset=-5.0)
    with caplog.at_level(logging.WARNING, logger="jobd"):
        assert leader.poll()
    assert leader.clock_skew == pytest.approx(-5.0, abs=1.0)
    assert any("differs from the store's by -5" in r.getMessage() for r in caplog.records)


def test_a_leader_whose_clock_drifts_too_far_steps_down_and_releases(store: Any) -> None:
    leader, clock = _leader(store, max_skew=10.0)
    assert leader.poll()
    clock.offset = timedelta(seconds=11)
    clock.mono += TTL / 3
    assert not leader.poll()
    assert not leader.leading
    assert leader_lease(store, store.now())["holder"] is None


def test_clock_offset_comes_from_the_environment() -> None:
    clock = Clock.from_env({"JOBD_TEST_CLOCK_OFFSET": "-2.5"})
    assert (datetime.now(UTC) - clock.now()).total_seconds() == pytest.approx(2.5, abs=0.1)
    assert Clock.from_env({}).offset == timedelta(0)
    with pytest.raises(ValueError, match="JOBD_TEST_CLOCK_OFFSET"):
        Clock.from_env({"JOBD_TEST_CLOCK_OFFSET": "soon"})
