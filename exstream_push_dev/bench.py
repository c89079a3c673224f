"""``exstream-push bench``: statement-ready end to end at scale, beside the ceiling and the SDK baseline.

Everything runs against the emulators on this machine, in one command: FCM in worker processes of its own, APNs
(HTTP/2 over TLS) and Web Push (each message decrypted as a browser would) in threads of the bench's process. The
device registry mixes the providers as ``--apns-share`` and ``--webpush-share`` say (``MIX`` by default), and the
figures give each provider's share of the rate.

- the **ceiling**: the fastest a minimal aiohttp client gets pre-encoded messages accepted;
- the **baseline**: firebase-admin's own ``send_each_async`` (500 per call) for 20,000 messages;
- the **product**: ``statement_ready`` on a generated manifest in ``--workers`` processes sharing the run (one per
  core by default), against one Prefect server, then the same manifest again (must send 0);
- the **control**: the first run again on a ledger of its own, by workers that append no evidence
  (``without_evidence/sitecustomize.py``): the first run's time over its time is what the evidence log costs.

The product's peak RSS is each worker process's own (``wait4``), so the emulators, the Prefect server and the
transport measurements in their processes do not count against it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import orjson

from exstream_push.settings import PROJECT_ROOT, Settings, configure_settings, get_settings

if TYPE_CHECKING:
    from google.oauth2 import service_account

BENCH_JOB = "BENCH"
STARTUP_RUNS = 3
STARTUP_CUSTOMERS = 20
BASELINE_MESSAGES = 20_000
CEILING_MESSAGES = 100_000
CEILING_CONCURRENCY = (16, 32, 64, 128)
MIX = {"fcm": 0.6, "apns": 0.3, "webpush": 0.1}
"""Devices per provider in the generated registry, unless the command says otherwise. ``--apns-share 0
--webpush-share 0`` makes every device FCM's, like the ceiling: CPU per notification compared like with like."""
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


def _credentials(key_file: Path) -> service_account.Credentials:
    from google.oauth2 import service_account

    from exstream_push.connectors.fcm import FCM_SCOPE

    return service_account.Credentials.from_service_account_file(str(key_file), scopes=[FCM_SCOPE])


async def _ceiling(url: str, project: str, count: int, concurrency: int, access_token: str) -> tuple[float, float]:
    """Messages per second accepted by a bare aiohttp client with pre-encoded bodies (no model, no ledger), and
    the client's own CPU per message (this process's user + system time), in µs."""
    bodies = [_notice_body(n) for n in range(count)]
    endpoint = f"{url}/v1/projects/{project}/messages:send"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {access_token}"}
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
        started, cpu_started = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if accepted != count:
        raise RuntimeError(f"ceiling: the emulator accepted {accepted} of {count}")
    return count / seconds, cpu_seconds / count * 1e6


async def _baseline(url: str, project: str, count: int, key_file: Path) -> float:
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
    credentials = _credentials(key_file)
    async with firebase_app_at(url, project, name="exstream-push-bench-baseline", credentials=credentials) as app:
        started = time.perf_counter()
        for start in range(0, count, 500):
            succeeded += (await messaging.send_each_async(messages[start : start + 500], app=app)).success_count
        seconds = time.perf_counter() - started
    if succeeded != count:
        raise RuntimeError(f"baseline: firebase-admin sent {succeeded} of {count}")
    return count / seconds


def _transport_rates(url: str, project: str, ceiling_messages: int, key_file: Path) -> tuple[float, int, float, float]:
    """The ceiling (its rate, best of a sweep of concurrencies, on the event loop the product sends on; its
    concurrency; its CPU per message) and the baseline, on asyncio's own loop as firebase-admin users run it.
    Both sign in with the run's service account."""
    from google.auth.transport.requests import Request

    from exstream_push.connectors.fcm import event_loop_factory

    credentials = _credentials(key_file)
    credentials.refresh(Request())  # an hour-long token: one sign-in covers the sweep
    rates = {}
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        for concurrency in CEILING_CONCURRENCY:
            rates[concurrency] = runner.run(_ceiling(url, project, ceiling_messages, concurrency, credentials.token))
    best = max(rates, key=lambda concurrency: rates[concurrency][0])
    rate, cpu_us = rates[best]
    return rate, best, cpu_us, asyncio.run(_baseline(url, project, BASELINE_MESSAGES, key_file))


def _ensure_data(folder: Path, customers: int, mix: Mapping[str, float]) -> tuple[Path, Path]:
    """The manifest and the device registry, generated once per size; the web devices' endpoints are placeholders
    until ``subscribe_web_devices`` subscribes them at this run's Web Push emulator."""
    from exstream_push_dev.emulators.samples import ProviderMix, write_devices, write_manifest

    manifest, devices = folder / "_STDDELIVERYFILE.xml", folder / "devices.csv"
    if not (manifest.exists() and devices.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        write_manifest(manifest, customers, seed=101, job_id=BENCH_JOB)
        write_devices(devices, customers, seed=102, mix=ProviderMix(apns=mix["apns"], webpush=mix["webpush"]))
    return manifest, devices


def _per_provider(sent: Mapping[str, int], seconds: float) -> dict[str, dict[str, float]]:
    """Each provider's messages sent in a run of ``seconds`` and its rate over the whole run: the providers send
    side by side in every batch, so their rates add up to the end-to-end one."""
    return {
        provider: {"sent": sent.get(provider, 0), "per_s": round(sent.get(provider, 0) / seconds)} for provider in MIX
    }


def _parse_rate(manifest: Path, customers: int) -> float:
    from exstream_push.manifest import DeliveryManifest

    started = time.perf_counter()
    read = sum(batch.num_rows for batch in DeliveryManifest(manifest).batches(get_settings().batch_size))
    seconds = time.perf_counter() - started
    if read != customers:
        raise RuntimeError(f"parse: read {read} of {customers} customers")
    return customers / seconds


def _task_run_phases(started: float, ended: float) -> tuple[dict[str, float], int]:
    """Seconds per phase and the number of task runs of the flow runs that started in [started, ended] (Unix
    time), as the Prefect API recorded them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    window = FlowRunFilter(
        start_time=FlowRunFilterStartTime(
            after_=datetime.fromtimestamp(started, UTC), before_=datetime.fromtimestamp(ended, UTC)
        )
    )

    async def read() -> list[Any]:
        """Task runs reach the API as events, a little after they finish: read until the count settles."""
        runs: list[Any] = []
        async with get_client() as client:
            for _ in range(30):
                page, runs = None, []
                while page is None or len(page) == 200:
                    page = await client.read_task_runs(flow_run_filter=window, limit=200, offset=len(runs))
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


def _first_task_start(api_url: str, after: float) -> float:
    """Unix time the first task run that started after ``after`` started, as the Prefect API recorded it (task
    runs reach it as events, a moment after the command that ran them may have exited)."""
    query = {"task_runs": {"start_time": {"after_": datetime.fromtimestamp(after, UTC).isoformat()}}, "limit": 200}
    for _ in range(60):
        runs = httpx.post(f"{api_url}/task_runs/filter", json=query, timeout=30).json()
        starts = [datetime.fromisoformat(run["start_time"]) for run in runs if run.get("start_time")]
        if starts:
            return min(starts).timestamp()
        time.sleep(0.5)
    raise RuntimeError(f"startup: no task run started after {after} reached {api_url}")


def measure_startup(home: Path, env: Mapping[str, str], runs: int = STARTUP_RUNS) -> dict[str, Any]:
    """``startup_seconds``: from a command's start to its first task run's start, the median of ``runs``, on the
    embedded defaults with the shared Prefect server of ``home`` already up (started first, and stopped after when
    this call started it). ``env`` is the command's environment; its PREFECT_API_URL is dropped."""
    from exstream_push.prefect_server import ensure_server, stop_server
    from exstream_push_dev.emulators.samples import write_manifest

    manifest = home / "startup" / "_STDDELIVERYFILE.xml"
    write_manifest(manifest, STARTUP_CUSTOMERS, seed=103, job_id="STARTUP")
    command = [str(Path(sys.executable).parent / "exstream-push"), "run", "statement-ready"]
    command += ["--manifest", str(manifest), "--job", "STARTUP"]
    command_env = {name: value for name, value in env.items() if name != "PREFECT_API_URL"}
    command_env.update({"EXSTREAM_PUSH_HOME": str(home), "EXSTREAM_PUSH_PREFECT_SERVER": "shared"})
    record, started_here = ensure_server(home)
    seconds = []
    try:
        for _ in range(runs):
            started = time.time()
            done = subprocess.run(command, env=command_env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"startup: {shlex.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
            seconds.append(round(_first_task_start(record.url, started) - started, 2))
    finally:
        if started_here:
            stop_server(home)
    return {
        "startup_seconds": statistics.median(seconds),
        "startup_seconds_runs": seconds,
        "startup_command": f"EXSTREAM_PUSH_HOME={shlex.quote(str(home))} {shlex.join(command)}",
    }


@dataclass
class WorkersRun:
    """What ``--workers`` processes sharing one run did together."""

    seconds: float
    started: float
    totals: Counter[str]
    peak_rss_mb: list[int]
    cpu_seconds: float
    """All worker processes' user + system CPU, from wait4."""


def _run_workers(count: int, manifest: Path, env: dict[str, str], logs: Path) -> WorkersRun:
    """``exstream-push run statement-ready`` in ``count`` processes at once, as an operator scales out a run."""
    command = [sys.executable, "-m", "exstream_push.cli", "run", "statement-ready"]
    command += ["--manifest", str(manifest), "--job", BENCH_JOB]
    started_at = time.time()
    started = time.perf_counter()
    workers = []
    for number in range(count):
        out = logs / f"worker-{number}-{int(started_at)}.json"
        with out.open("wb") as stdout, (logs / "workers.log").open("ab") as stderr:
            workers.append((subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr), out))
    totals: Counter[str] = Counter()
    peak_rss: list[int] = []
    cpu_seconds = 0.0
    for process, out in workers:
        _pid, status, usage = os.wait4(process.pid, 0)  # wait4, for this worker's own peak RSS
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"a bench worker exited {process.returncode}; see {logs / 'workers.log'}")
        result = json.loads(out.read_text())
        totals.update({name: value for name, value in result.items() if isinstance(value, int | float)})
        peak_rss.append(round(usage.ru_maxrss / 1024))
        cpu_seconds += usage.ru_utime + usage.ru_stime
    return WorkersRun(time.perf_counter() - started, started_at, totals, peak_rss, cpu_seconds)


WITHOUT_EVIDENCE = Path(__file__).parent / "without_evidence"
"""A ``sitecustomize`` that takes the evidence log out of a worker's ledger writes: the control run's."""


def _control_run(
    workers: int, manifest: Path, env: Mapping[str, str], logs: Path, home: Path, devices: Path
) -> WorkersRun:
    """The first run again, in a ledger of its own, with worker processes that append no evidence: the same work
    less the log, so the first run's time over this one's is what the log costs."""
    from exstream_push.devices import import_devices
    from exstream_push.runtime import ledger_for

    ledger = ledger_for(Settings(home=home))
    import_devices(ledger, devices)
    path = os.pathsep.join(filter(None, [str(WITHOUT_EVIDENCE), env.get("PYTHONPATH")]))
    run = _run_workers(workers, manifest, {**env, "EXSTREAM_PUSH_HOME": str(home), "PYTHONPATH": path}, logs)
    if ledger.evidence_records():
        raise RuntimeError("the control run appended evidence: it would not measure the log's cost")
    return run


def run_bench(
    customers: int,
    out: Path,
    emulator_workers: int,
    workers: int,
    latency_ms: float,
    mix: Mapping[str, float] = MIX,
) -> dict[str, Any]:
    """Statement-ready on ``customers`` at 0 ms (and its re-run), then the same data against providers answering
    after ``latency_ms``, beside the bare client's ceiling and firebase-admin's baseline (both FCM only).
    ``mix``: each provider's share of the devices (``fcm``, ``apns``, ``webpush``)."""
    base = get_settings()
    work = (base.home / "bench").resolve()
    mix_name = "-".join(f"{provider}{share:g}" for provider, share in mix.items())
    manifest, unsubscribed_devices = _ensure_data(work / f"data-{customers}-{mix_name}", customers, mix)
    run_home = work / "run"
    shutil.rmtree(run_home, ignore_errors=True)
    logs = run_home / "logs"
    logs.mkdir(parents=True)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

    from exstream_push.prefect_server import port_or_free
    from exstream_push_dev.emulators.apns import apns_emulator
    from exstream_push_dev.emulators.exstream import create_exstream_app
    from exstream_push_dev.emulators.google_oauth import fcm_process_env, oauth_emulator
    from exstream_push_dev.emulators.samples import subscribe_web_devices
    from exstream_push_dev.emulators.server import EmulatorProcess, ServerThread
    from exstream_push_dev.emulators.webpush import development_vapid_key, webpush_emulator
    from exstream_push_dev.stack import ChildProcess, prefect_env, wait_for_http

    key_file = run_home / "service-account.json"
    project = Settings().fcm_project
    prefect_port = str(port_or_free(4210))
    prefect_url = f"http://127.0.0.1:{prefect_port}/api"
    os.environ.update(prefect_env(os.environ, run_home / "prefect", prefect_url))
    prefect_server = ChildProcess(
        "Prefect server",
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", prefect_port],
        env=os.environ,
        cwd=PROJECT_ROOT,
        log_file=logs / "prefect-server.log",
    )
    with (
        oauth_emulator(key_file, project) as oauth,
        EmulatorProcess(
            "exstream_push_dev.emulators.fcm:create_fcm_app_from_env",
            workers=emulator_workers,
            env={"FCM_EMULATOR_KEEP_MESSAGES": "0", **fcm_process_env(oauth)},
        ) as fcm_url,
        ServerThread(create_exstream_app(None)) as exstream,
        apns_emulator(run_home / "emulators") as apns,
        webpush_emulator(run_home / "emulators") as webpush,
    ):
        tls_emulators = (apns.state, webpush.app.state.webpush)
        for state in tls_emulators:
            state.keep_messages = False
        devices = run_home / "devices.csv"
        subscribe_web_devices(unsubscribed_devices, devices, webpush.url, webpush.tls.ca_file)
        # The bench's own run: given to the product in this process, and to the worker processes as variables.
        # Every sender signs in as production does: the service account's JWT, exchanged at the token emulator;
        # APNs with the team's signing key, Web Push with a VAPID key.
        exstream_url = f"{exstream.url}/orchestration"
        run_env = {
            "EXSTREAM_PUSH_HOME": str(run_home),
            "EXSTREAM_PUSH_FCM_URL": fcm_url,
            "EXSTREAM_PUSH_EXSTREAM_URL": exstream_url,
            "EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE": str(key_file),
            **apns.environment(),
            "EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE": str(development_vapid_key(run_home / "emulators")),
        }
        settings = Settings(
            home=run_home,
            fcm_url=fcm_url,
            exstream_url=exstream_url,
            fcm_service_account_file=key_file,
            apns_url=apns.url,
            apns_team_id=apns.key.team_id,
            apns_key_id=apns.key.key_id,
            apns_key_file=apns.key.key_file,
            apns_bundle_id=apns.bundle_id,
            webpush_vapid_private_key_file=development_vapid_key(run_home / "emulators"),
            ca_file=webpush.tls.ca_file,
        )
        configure_settings(settings)

        shares = ", ".join(f"{share:.0%} {provider}" for provider, share in mix.items())
        print(
            f"bench: {customers:,} customers ({shares} devices), {workers} worker process(es); FCM emulator {fcm_url} "
            f"({emulator_workers} process(es)), APNs {apns.url}, Web Push {webpush.url}"
        )
        ceiling_messages = min(CEILING_MESSAGES, max(customers, 10_000))
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            ceiling, ceiling_concurrency, ceiling_cpu_us, baseline = pool.submit(
                _transport_rates, fcm_url, project, ceiling_messages, key_file
            ).result()
        print(f"  ceiling (bare aiohttp, best at {ceiling_concurrency} concurrent): {ceiling:,.0f} msg/s")
        print(f"  baseline (firebase-admin send_each_async): {baseline:,.0f} msg/s")
        parse_rate = _parse_rate(manifest, customers)
        print(f"  manifest parse: {parse_rate:,.0f} customers/s")

        from exstream_push.devices import import_devices
        from exstream_push.runtime import ledger_for

        import_devices(ledger_for(settings), devices)
        # The shared server on the same Prefect database, up before the bench's own and stopped again
        startup = measure_startup(run_home, {**os.environ, **run_env})
        print(f"  startup (command start to first task run, median of {STARTUP_RUNS}): {startup['startup_seconds']} s")
        prefect_server.start()
        try:
            wait_for_http(f"{prefect_url}/health", prefect_server)
            env = {**os.environ, **run_env, "EXSTREAM_PUSH_BATCHES_IN_FLIGHT": "1" if workers > 1 else "2"}
            first = _run_workers(workers, manifest, env, logs)
            first_by_provider = ledger_for(settings).sent_by_provider("statement-ready", BENCH_JOB)
            second = _run_workers(workers, manifest, env, logs)
            phases, task_runs = _task_run_phases(first.started, second.started)
            evidence_records = ledger_for(settings).evidence_records()
            without_evidence = _control_run(workers, manifest, env, logs, run_home / "without-evidence", devices)
            # The same data again, in a ledger of its own, against providers that answer after latency_ms.
            latency_home = run_home / "at-latency"
            latency_ledger = ledger_for(Settings(home=latency_home))
            import_devices(latency_ledger, devices)
            for state in tls_emulators:
                state.latency = latency_ms / 1000
            with EmulatorProcess(
                "exstream_push_dev.emulators.fcm:create_fcm_app_from_env",
                workers=emulator_workers,
                env={
                    "FCM_EMULATOR_KEEP_MESSAGES": "0",
                    "FCM_EMULATOR_LATENCY": str(latency_ms / 1000),
                    **fcm_process_env(oauth),
                },
            ) as far_fcm_url:
                far_env = {**env, "EXSTREAM_PUSH_HOME": str(latency_home), "EXSTREAM_PUSH_FCM_URL": far_fcm_url}
                at_latency = _run_workers(workers, manifest, far_env, logs)
            at_latency_by_provider = latency_ledger.sent_by_provider("statement-ready", BENCH_JOB)
        finally:
            prefect_server.stop()
    phases["record"] = round(first.totals["seconds_recording"], 2)

    sent = first.totals["sent"]
    end_to_end = sent / first.seconds
    end_to_end_at_latency = at_latency.totals["sent"] / at_latency.seconds
    cpu_us = first.cpu_seconds / sent * 1e6 if sent else None
    recipients = sent + first.totals["failed"] + first.totals["already_done"]
    figures = {
        "customers": customers,
        "provider_mix": dict(mix),
        "worker_processes": workers,
        "manifest_parse_customers_per_s": round(parse_rate),
        "end_to_end_notifications_per_s": round(end_to_end),
        "end_to_end_at_latency_per_s": round(end_to_end_at_latency),
        "per_provider": _per_provider(first_by_provider, first.seconds),
        "per_provider_at_latency": _per_provider(at_latency_by_provider, at_latency.seconds),
        "latency_ms": latency_ms,
        "latency_ratio": round(end_to_end_at_latency / end_to_end, 3),
        "notifications_sent_at_latency": at_latency.totals["sent"],
        "cpu_us_per_notification": round(cpu_us) if cpu_us is not None else None,
        "ceiling_cpu_us_per_message": round(ceiling_cpu_us),
        "cpu_ratio": round(cpu_us / ceiling_cpu_us, 2) if cpu_us is not None else None,
        "notifications_sent": sent,
        "notifications_failed": first.totals["failed"],
        "first_run_seconds": round(first.seconds, 2),
        "first_run_seconds_without_evidence": round(without_evidence.seconds, 2),
        "evidence_cost_ratio": round(first.seconds / without_evidence.seconds - 1, 3),
        "evidence_records": evidence_records,
        "cpu_us_per_notification_without_evidence": (
            round(without_evidence.cpu_seconds / without_evidence.totals["sent"] * 1e6)
            if without_evidence.totals["sent"]
            else None
        ),
        "seconds_per_phase": {name: round(value, 2) for name, value in sorted(phases.items())},
        "peak_rss_mb": max(first.peak_rss_mb + second.peak_rss_mb),
        "peak_rss_mb_per_worker": first.peak_rss_mb,
        "prefect_task_runs": task_runs,
        "recipients_per_task_run": round(recipients / task_runs) if task_runs else None,
        "ceiling_msgs_per_s": round(ceiling),
        "ceiling_concurrency": ceiling_concurrency,
        "baseline_msgs_per_s": round(baseline),
        "end_to_end_over_ceiling": round(end_to_end / ceiling, 3),
        "end_to_end_over_baseline": round(end_to_end / baseline, 1),
        "second_run_seconds": round(second.seconds, 2),
        "second_run_sent": second.totals["sent"],
        "second_run_over_first": round(second.seconds / first.seconds, 3),
        **startup,
        "emulator_worker_processes": emulator_workers,
        "command": shlex.join(sys.orig_argv),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    for name, value in figures.items():
        print(f"  {name}: {value}")
    print(f"figures written to {out}")
    return figures
