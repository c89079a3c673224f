"""How fast do messages leave: our aiohttp ``FcmSender`` against firebase-admin's own ``send_each_async``.

Both send the same firebase-admin messages to the FCM emulator, which runs in a process of its own so the server
does not compete with the client for one GIL, and both sign in with one service account at the token emulator.
Run from the repository root:

    .venv/bin/python benchmarks/fcm_transport.py --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from firebase_admin import messaging
from google.oauth2 import service_account

from exstream_push.connectors.fcm import FCM_SCOPE, FcmSender, PushRequest, build_message, firebase_app_at
from exstream_push_dev.emulators.google_oauth import fcm_process_env, oauth_emulator
from exstream_push_dev.emulators.server import EmulatorProcess

PROJECT = "benchmark-project"
SDK_BATCH = 500  # send_each_async takes at most 500 messages per call


@dataclass(frozen=True)
class Run:
    name: str
    messages: int
    accepted: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@contextmanager
def emulators(work: Path, latency_ms: float) -> Iterator[tuple[str, service_account.Credentials]]:
    """The FCM emulator under uvicorn in a child process, answering after ``latency_ms``, and the token endpoint
    both clients sign in at."""
    key_file = work / "service-account.json"
    with (
        oauth_emulator(key_file, PROJECT) as oauth,
        EmulatorProcess(
            "exstream_push_dev.emulators.fcm:create_fcm_app_from_env",
            env={**fcm_process_env(oauth), "FCM_EMULATOR_LATENCY": str(latency_ms / 1000)},
        ) as url,
    ):
        yield url, service_account.Credentials.from_service_account_file(str(key_file), scopes=[FCM_SCOPE])


def notices(count: int, run: str) -> list[messaging.Message]:
    """Realistic "your statement is ready" pushes: opaque reference, portal link, collapse key."""
    return [
        build_message(
            token=f"{run}-device-{n:06d}",
            title="Your statement is ready",
            body="Your new account statement is available. Open the app to view it.",
            data={
                "use_case": "statement_ready",
                "document_ref": f"ref-{n:08x}",
                "deep_link": f"https://portal.example.com/documents/ref-{n:08x}?sig=0123456789abcdef",
            },
            collapse_key=f"statement-ready-{n:08x}",
        )
        for n in range(count)
    ]


def accepted_since_reset(url: str) -> int:
    return httpx.get(f"{url}/_emulator/stats").json()["accepted"]


def reset(url: str) -> None:
    httpx.delete(f"{url}/_emulator/messages").raise_for_status()


def run_fcm_sender(
    url: str, credentials: service_account.Credentials, count: int, concurrency: int, max_concurrency: int
) -> Run:
    requests = [PushRequest(key=str(n), message=message) for n, message in enumerate(notices(count, "ours"))]
    sender = FcmSender(
        base_url=url,
        project_id=PROJECT,
        concurrency=concurrency,
        max_concurrency=max_concurrency,
        credentials=credentials,
    )
    reset(url)
    started = time.perf_counter()
    results = sender.send(requests)
    seconds = time.perf_counter() - started
    failed = sum(not result.ok for result in results)
    if failed:
        raise RuntimeError(f"FcmSender: {failed} of {count} messages failed")
    assert sender.last_limit is not None
    name = f"FcmSender ({concurrency}-{max_concurrency} in flight, peak {sender.last_limit.peak_in_flight})"
    return Run(name, count, accepted_since_reset(url), seconds)


def run_firebase_admin(url: str, credentials: service_account.Credentials, count: int) -> tuple[Run, Run | None]:
    """The whole run, and the run without its first call, which pays alone for opening the connections."""
    messages = notices(count, "sdk")
    call_seconds: list[float] = []

    async def send_all() -> int:
        succeeded = 0
        async with firebase_app_at(url, PROJECT, name="benchmark-baseline", credentials=credentials) as app:
            for start in range(0, count, SDK_BATCH):
                call_started = time.perf_counter()
                batch = await messaging.send_each_async(messages[start : start + SDK_BATCH], app=app)
                call_seconds.append(time.perf_counter() - call_started)
                succeeded += batch.success_count
        return succeeded

    reset(url)
    started = time.perf_counter()
    succeeded = asyncio.run(send_all())
    seconds = time.perf_counter() - started
    if succeeded != count:
        raise RuntimeError(f"firebase-admin: {count - succeeded} of {count} messages failed")
    name = f"firebase-admin send_each_async ({SDK_BATCH} per call)"
    whole = Run(name, count, accepted_since_reset(url), seconds)
    if len(call_seconds) < 2:
        return whole, None
    later = count - min(SDK_BATCH, count)
    return whole, Run("  the same without its first call", later, later, sum(call_seconds[1:]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per client (default 20000)")
    parser.add_argument("--concurrency", type=int, default=64, help="FcmSender requests in flight at first")
    parser.add_argument("--max-concurrency", type=int, default=512, help="FcmSender requests in flight at most")
    parser.add_argument("--latency", type=float, default=0.0, help="ms the emulator waits before answering")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="FcmSender only, without firebase-admin's (minutes on a busy machine)",
    )
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work, emulators(Path(work), args.latency) as (url, credentials):
        fixed = run_fcm_sender(url, credentials, args.messages, args.concurrency, args.concurrency)
        ours = run_fcm_sender(url, credentials, args.messages, args.concurrency, args.max_concurrency)
        sdk, sdk_warm = (None, None) if args.no_baseline else run_firebase_admin(url, credentials, args.messages)
    for run in (fixed, ours, sdk):
        if run is not None and run.accepted != run.messages:
            raise RuntimeError(f"{run.name}: the emulator accepted {run.accepted} of {run.messages}")
    print(f"FCM emulator answering after {args.latency:g} ms")
    for run in (fixed, ours, sdk, sdk_warm):
        if run is not None:
            print(f"{run.name:<48} {run.rate:>8,.0f} msg/s  ({run.messages:,} in {run.seconds:.1f} s)")
    if sdk is not None:
        print(f"{'ratio':<48} {ours.rate / sdk.rate:>8.1f} x")
    if sdk_warm is not None:
        print(f"{'  without its first call':<48} {ours.rate / sdk_warm.rate:>8.1f} x")
    print(f"command: {shlex.join(sys.orig_argv)}")


if __name__ == "__main__":
    main()
