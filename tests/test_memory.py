"""Allocator settings applied on import: Arrow on the system allocator, unless the operator chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = "import exstream_push, pyarrow; print(pyarrow.default_memory_pool().backend_name)"


def _pool(extra_env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"} | extra_env
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_arrow_allocates_through_the_system_allocator_after_import() -> None:
    assert _pool({}) == "system"


def test_an_operators_choice_of_arrow_pool_wins() -> None:
    assert _pool({"ARROW_DEFAULT_MEMORY_POOL": "mimalloc"}) == "mimalloc"


FRAGMENTED = """
import exstream_push
from exstream_push.memory import return_freed_memory

def rss_mb():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmRSS")).split()[1]) / 1024

pieces = [bytes(1000) for _ in range(200_000)]  # 200 MB of small blocks, from the heap, not mmap
kept = pieces[::100]  # one in a hundred stays: the heap cannot shrink from its top
del pieces
before = rss_mb()
return_freed_memory()
print(before - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux only")
def test_what_a_batch_freed_goes_back_to_the_system_though_the_heap_is_fragmented() -> None:
    done = subprocess.run([sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, check=True)
    assert float(done.stdout) > 100  # of ~200 MB freed between kept blocks, most is handed back
