"""Outcomes told to people and monitors: Prometheus metrics, `[notify.NAME]`
channels (webhook, email) and check-in pings (`ping_url`)."""
