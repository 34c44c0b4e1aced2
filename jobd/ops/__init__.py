"""The operations layer: one typed function per operation on jobs and runs.

Every front end (the CLI, the HTTP API, the Python client) calls these, so
validation, quota decisions, audit rows and wake-ups are the same whichever
way a request arrives. An operation takes a Scope (the store and
the config it acts on) and the acting identity, returns typed values, prints
nothing, and raises the error types of jobd.errors.
"""
