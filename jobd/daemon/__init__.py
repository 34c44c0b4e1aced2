"""The daemon: the loop that plans, fires and claims, and what keeps it alive."""
