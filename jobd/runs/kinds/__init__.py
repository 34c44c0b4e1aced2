"""jobd's own child programs for the sql, http and call job kinds, each run as
`python -I -m jobd.runs.kinds.NAME` so that nothing in a job's cwd is imported."""
