"""Reusable Prefect tasks. Each takes a batch of thousands of records: a task run costs ~7 ms and ~60 KB."""
