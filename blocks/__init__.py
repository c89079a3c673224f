"""Prefect blocks: named, saved connection settings a deployment loads at run time."""
