"""Storage: the tables, the engine with its per-dialect settings, the unit of work."""
