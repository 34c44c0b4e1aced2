"""The operating system's side: the clock (the one place that reads time), clock
steps, signals, sd_notify, the waker, liveness locks, logging, paths, detaching."""
