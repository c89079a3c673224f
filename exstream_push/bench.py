"""``exstream-push bench``: statement-ready end to end at scale, beside the ceiling and the SDK baseline.

Everything runs against the FCM emulator in worker processes of its own, on this machine, in one command:

- the **ceiling**: the fastest a minimal aiohttp client gets pre-encoded messages accepted;
- the **baseline**: firebase-admin's own ``send_each_async`` (500 per call) for 20,000 messages;
- the **product**: ``statement_ready`` on a generated manifest, then the same manifest again (must send 0).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import resource
import shlex
import shutil
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from exstream_push.settings import get_settings

BASELINE_MESSAGES = 20_000
CEILING_MESSAGES = 100_000
CEILING_CONCURRENCY = 64
PHASES = {
    "extract-manifest": "extract",
    "segment-recipients": "segment",
    "render-messages": "render",
    "send-push": "send",
    "post-outcomes-to-exstream": "post_back",
}


def _notice_body(number: int) -> bytes:
    message = {
        "token": f"bench-{number:09d}",
        "notification": {"title": "Your statement is ready", "body": "A new statement is waiting in your portal."},
        "data": {"document_ref": f"ref{number:012d}", "deep_link": f"https://portal.example.com/d/ref{number:012d}"},
        "android": {"collapse_key": f"{number:032x}"},
    }
    return orjson.dumps({"message": message})


async def _ceiling(url: str, project: str, count: int, concurrency: int) -> float:
    """Messages per second accepted by a bare aiohttp client with pre-encoded bodies: no model, no ledger."""
    bodies = [_notice_body(n) for n in range(count)]
    endpoint = f"{url}/v1/projects/{project}/messages:send"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer owner"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    next_index = 0
    accepted = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_index, accepted
        while next_index < count:
            body = bodies[next_index]
            next_index += 1
            async with session.post(endpoint, data=body, headers=headers) as response:
                await response.read()
                accepted += response.status == 200

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    if accepted != count:
        raise RuntimeError(f"ceiling: the emulator accepted {accepted} of {count}")
    return count / seconds


async def _baseline(url: str, project: str, count: int) -> float:
    """firebase-admin's own send path, 500 messages per ``send_each_async`` call."""
    from firebase_admin import messaging

    from exstream_push.connectors.fcm import build_message, firebase_app_at

    messages = [
        build_message(
            token=f"sdk-{n:09d}",
            title="Your statement is ready",
            body="A new statement is waiting in your portal.",
            data={"document_ref": f"ref{n:012d}"},
            collapse_key=f"{n:032x}",
        )
        for n in range(count)
    ]
    succeeded = 0
    async with firebase_app_at(url, project, name="exstream-push-bench-baseline") as app:
        started = time.perf_counter()
        for start in range(0, count, 500):
            succeeded += (await messaging.send_each_async(messages[start : start + 500], app=app)).success_count
        seconds = time.perf_counter() - started
    if succeeded != count:
        raise RuntimeError(f"baseline: firebase-admin sent {succeeded} of {count}")
    return count / seconds


def _transport_rates(url: str, project: str, ceiling_messages: int) -> tuple[float, float]:
    return (
        asyncio.run(_ceiling(url, project, ceiling_messages, CEILING_CONCURRENCY)),
        asyncio.run(_baseline(url, project, BASELINE_MESSAGES)),
    )


def _ensure_data(folder: Path, customers: int) -> tuple[Path, Path]:
    from emulators.samples import write_devices, write_manifest

    manifest, devices = folder / "_STDDELIVERYFILE.xml", folder / "devices.csv"
    if not (manifest.exists() and devices.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        write_manifest(manifest, customers, seed=101, job_id="BENCH")
        write_devices(devices, customers, seed=102)
    return manifest, devices


def _parse_rate(manifest: Path, customers: int) -> float:
    from exstream_push.manifest import DeliveryManifest

    started = time.perf_counter()
    read = sum(batch.num_rows for batch in DeliveryManifest(manifest).batches(get_settings().batch_size))
    seconds = time.perf_counter() - started
    if read != customers:
        raise RuntimeError(f"parse: read {read} of {customers} customers")
    return customers / seconds


def _task_run_phases(flow_run_id: Any) -> tuple[dict[str, float], int]:
    """Seconds per phase and the number of task runs, as the Prefect API recorded them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list[Any]:
        """Task runs reach the API as events, a little after they finish: read until the count settles."""
        runs: list[Any] = []
        async with get_client() as client:
            for _ in range(30):
                page, runs = None, []
                while page is None or len(page) == 200:
                    page = await client.read_task_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                        limit=200,
                        offset=len(runs),
                    )
                    runs.extend(page)
                if all(run.state is not None and run.state.is_final() for run in runs) and len(runs) >= len(PHASES):
                    return runs
                await asyncio.sleep(1)
        return runs

    task_runs = asyncio.run(read())
    phases: dict[str, float] = defaultdict(float)
    for task_run in task_runs:
        name = task_run.name.rsplit("-", 1)[0]
        phases[PHASES.get(name, name)] += task_run.total_run_time.total_seconds()
    return dict(phases), len(task_runs)


def run_bench(customers: int, out: Path, emulator_workers: int) -> dict[str, Any]:
    base = get_settings()
    work = (base.home / "bench").resolve()
    manifest, devices = _ensure_data(work / f"data-{customers}", customers)
    run_home = work / "run"
    shutil.rmtree(run_home, ignore_errors=True)
    (run_home / "prefect").mkdir(parents=True)
    os.environ["EXSTREAM_PUSH_HOME"] = str(run_home)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from emulators.exstream import create_exstream_app
    from emulators.server import EmulatorProcess, ServerThread
    from exstream_push.cli import configure_prefect

    fcm_env = {"FCM_EMULATOR_KEEP_MESSAGES": "0"}
    with (
        EmulatorProcess("emulators.fcm:create_fcm_app_from_env", workers=emulator_workers, env=fcm_env) as fcm_url,
        ServerThread(create_exstream_app(None)) as exstream,
    ):
        os.environ["EXSTREAM_PUSH_FCM_URL"] = fcm_url
        os.environ["EXSTREAM_PUSH_EXSTREAM_URL"] = f"{exstream.url}/orchestration"
        settings = get_settings()
        configure_prefect(settings)
        project = settings.fcm_project

        print(f"bench: {customers:,} customers; FCM emulator {fcm_url} ({emulator_workers} worker processes)")
        ceiling_messages = min(CEILING_MESSAGES, max(customers, 10_000))
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            # In a child process, so this process's peak RSS is the product's alone.
            ceiling, baseline = pool.submit(_transport_rates, fcm_url, project, ceiling_messages).result()
        print(f"  ceiling (bare aiohttp, {CEILING_CONCURRENCY} concurrent): {ceiling:,.0f} msg/s")
        print(f"  baseline (firebase-admin send_each_async): {baseline:,.0f} msg/s")
        parse_rate = _parse_rate(manifest, customers)
        print(f"  manifest parse: {parse_rate:,.0f} customers/s")

        from exstream_push.devices import import_devices
        from exstream_push.runtime import ledger_for
        from flows.statement_ready import statement_ready

        import_devices(ledger_for(settings), devices)
        from prefect import flow

        @flow(name="bench-warm-up")
        def warm_up() -> None:
            """Starts Prefect's embedded server, so its start-up is not counted in the run."""

        warm_up()
        started = time.perf_counter()
        state = statement_ready(manifest=str(manifest), job_id="BENCH", return_state=True)
        first_seconds = time.perf_counter() - started
        first = state.result()
        phases, task_runs = _task_run_phases(state.state_details.flow_run_id)
        phases["record"] = round(first.get("seconds_recording", 0.0), 2)

        started = time.perf_counter()
        second = statement_ready(manifest=str(manifest), job_id="BENCH")
        second_seconds = time.perf_counter() - started

    recorded = first.get("sent", 0) + first.get("failed", 0)
    end_to_end = first.get("sent", 0) / first_seconds
    recipients = recorded + first.get("already_done", 0)
    figures = {
        "customers": customers,
        "manifest_parse_customers_per_s": round(parse_rate),
        "end_to_end_notifications_per_s": round(end_to_end),
        "notifications_sent": first.get("sent", 0),
        "notifications_failed": first.get("failed", 0),
        "first_run_seconds": round(first_seconds, 2),
        "seconds_per_phase": {name: round(value, 2) for name, value in sorted(phases.items())},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "prefect_task_runs": task_runs,
        "recipients_per_task_run": round(recipients / task_runs) if task_runs else None,
        "ceiling_msgs_per_s": round(ceiling),
        "baseline_msgs_per_s": round(baseline),
        "end_to_end_over_ceiling": round(end_to_end / ceiling, 3),
        "end_to_end_over_baseline": round(end_to_end / baseline, 1),
        "second_run_seconds": round(second_seconds, 2),
        "second_run_sent": second.get("sent", 0),
        "second_run_over_first": round(second_seconds / first_seconds, 3),
        "emulator_worker_processes": emulator_workers,
        "command": shlex.join(sys.orig_argv),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    for name, value in figures.items():
        print(f"  {name}: {value}")
    print(f"figures written to {out}")
    return figures
