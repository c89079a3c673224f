"""Allocator settings applied on import: Arrow on the system allocator, unless the operator chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


STATEMENTS = """
import ctypes, sys
from exstream_push.ledger import Ledger

ledger = Ledger(f"sqlite:///{sys.argv[1]}/ledger.db")
# The SQLite library this process's driver loaded (a Python built with SQLite inside has none to ask).
path = next((line.split()[-1] for line in open("/proc/self/maps") if "libsqlite3" in line), None)
if path is None:
    print("static")
    raise SystemExit
sqlite = ctypes.CDLL(path)
sqlite.sqlite3_memory_used.restype = ctypes.c_int64
with ledger.engine.connect() as conn:
    for length in range(1_800, 2_000):  # a read of every length a batch's last chunk can have
        marks = ", ".join("?" * length)
        conn.exec_driver_sql(f'SELECT "key" FROM notification WHERE "key" IN ({marks})', tuple(map(str, range(length))))
    print(sqlite.sqlite3_memory_used() / 1e6)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the loaded SQLite library from /proc")
def test_a_ledger_connection_keeps_a_bounded_number_of_prepared_statements(tmp_path: Path) -> None:
    """200 reads of different lengths leave SQLite holding the last 32 prepared, not 128 (~45 MB) of them."""
    done = subprocess.run([sys.executable, "-c", STATEMENTS, str(tmp_path)], capture_output=True, text=True, check=True)
    if done.stdout.strip() == "static":
        pytest.skip("this Python's SQLite is linked in: its memory cannot be read from outside")
    assert float(done.stdout) < 25
