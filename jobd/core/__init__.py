"""The pure core: the model, cron maths, policies, the planner, config parsing and
importers. Standard library and cronsim only: no clock reads, no I/O."""
