"""jobd: a cron-style job scheduler whose every run is recorded in one store."""

__version__ = "0.1.0"
