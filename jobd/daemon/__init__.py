"""The daemon: the loop that plans, fires and claims (loop), and beside it firing
(due slots into runs), heartbeats (liveness, the fence, lost runs), housekeeping
(the periodic timers) and start-up (waiting for the store, wake-ups, metrics)."""
