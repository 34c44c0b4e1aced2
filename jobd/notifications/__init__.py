"""Outcomes told to people and monitors: `[notify.NAME]` channels (webhook, email)
and check-in pings (`ping_url`). Not to be confused with jobd.notify, systemd's
sd_notify."""
