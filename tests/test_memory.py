"""Allocator settings applied on import: Arrow on the system allocator, unless the operator chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = "import exstream_push, pyarrow; print(pyarrow.default_memory_pool().backend_name)"


def _pool(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"} | extra_env
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_arrow_allocates_through_the_system_allocator_after_import() -> None:
    assert _pool({}) == "system"


def test_an_operators_choice_of_arrow_pool_wins() -> None:
    assert _pool({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}) == "mimalloc"
