"""Runs as processes: spawning and supervising a job's process tree, its output,
the executor that records outcomes, local runs, fencing, and the sql/http/call
child programs."""
