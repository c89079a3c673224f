"""Prefect flows, one per use case. Thin: they say what happens in which order; the tasks do the work."""
