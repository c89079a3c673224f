"""Which task runner a flow run uses: Prefect's thread pool in one process, or Dask across workers.

The flows submit one task run per batch, so with Dask the batches of a run spread over the cluster's workers.
Dask workers are separate processes (or machines): they read their settings from their own environment, and
all of them draw from the one FCM send quota (``exstream_push/quota.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

TASK_RUNNERS = ("default", "dask")


def task_runner_for(
    name: str, address: str | None = None, workers: int | None = None, processes: bool = True
) -> TaskRunner:
    """``dask`` connects to the scheduler at ``address`` when given, else starts a local cluster of ``workers``
    (Dask's default: one per core) for the run. ``processes=False`` keeps local workers as threads of this
    process, which shares its memory and environment but not the GIL. Prefect is imported here, not at module
    level, so the command line starts without it."""
    from prefect.task_runners import ThreadPoolTaskRunner

    if name == "default":
        return ThreadPoolTaskRunner()
    if name != "dask":
        raise ValueError(f"unknown task runner {name!r}; choose one of {', '.join(TASK_RUNNERS)}")
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    cluster_kwargs: dict[str, object] = {"processes": processes}
    if workers is not None:
        cluster_kwargs["n_workers"] = workers
    return DaskTaskRunner(cluster_kwargs=cluster_kwargs)
