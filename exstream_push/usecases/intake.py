"""A use-case run's new input: a manifest file, or every delivery file of an Exstream job (or neither)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.settings import get_settings
from exstream_push.tasks.extract import ManifestSource, fetch_job_manifests, job_id_for_file


def manifest_sources(
    manifest: str | None, job_id: str | None, exstream: ExstreamConnection, use_case: str
) -> list[ManifestSource]:
    """New input, if any: a manifest file, or every delivery file of an Exstream job; neither is a ledger-only run."""
    if manifest is not None:
        path = Path(manifest)
        return [ManifestSource(path=path, job_id=job_id or job_id_for_file(path), step_id="manifest")]
    if job_id is not None:
        return fetch_job_manifests(job_id, exstream, use_case)
    return []


def discard_manifest_spools(use_case: str, sources: Sequence[ManifestSource]) -> None:
    """Once every delivery file of the run is registered, its spooled copies and batches are no longer needed."""
    for job_id in {source.job_id for source in sources}:
        shutil.rmtree(get_settings().spool_dir(use_case, job_id), ignore_errors=True)
