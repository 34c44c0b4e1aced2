"""What the store asks of the host it runs on, done here: the store layer opens
no socket and takes no lock itself.

Whoever opens a store for real work passes HOST (jobd.store.open_store's
`hooks`): after a commit that queued runs or moved fires, the daemons' wake
sockets are poked (jobd.system.waker), and an instance is judged live or gone by
its liveness lock where it has one (jobd.system.liveness).
"""

from __future__ import annotations

from collections.abc import Sequence

from jobd.store.instances import HostHooks
from jobd.system.liveness import forget, presence
from jobd.system.waker import poke_all


def poke(directories: Sequence[str]) -> None:
    for directory in directories:
        poke_all(directory)


HOST = HostHooks(wake=poke, presence=presence, forget=forget)
