"""``exstream-push up``: the whole event-driven system on one machine, for a user who wants the Prefect UI.

A Prefect server (SQLite in the state folder, unless ``PREFECT_API_DATABASE_CONNECTION_URL`` names another
database), the ``exstream-push`` process work pool with a worker, every deployment and automation of
``prefect.yaml``, the FCM, APNs, Web Push and Exstream emulators (the web devices of data/devices.csv subscribed
at the Web Push one), an operations inbox for failure notifications (unless a webhook URL is configured) and the
ingress API. Ctrl-C or SIGTERM stops all of it, children first, and the command exits 0.

Each child runs in a session of its own: the terminal's Ctrl-C reaches only this process, which stops the children
in order (the worker before the server it reports to), and a child's own subprocesses stop with it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
import yaml

from exstream_push.prefect_server import ServerRecord, pid_alive, port_or_free, stack_state_file, write_record
from exstream_push.settings import PROJECT_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import AutomationCore

    from exstream_push_dev.emulators.apns import ApnsEmulator
    from exstream_push_dev.emulators.server import ServerThread

WORK_POOL = "exstream-push"
WORKER_NAME = "exstream-push-local"
FCM_PORT = 8090
OAUTH_PORT = 8092
EXSTREAM_PORT = 8091
APNS_PORT = 8093
WEBPUSH_PORT = 8094
INGRESS_PORT = 8095
OPERATIONS_PORT = 8096
STARTUP_TIMEOUT = 180.0
DEPLOY_TIMEOUT = 600.0
STOP_TIMEOUT = 30.0
LOOPBACK = "127.0.0.1"
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
BLOCK_REFERENCE = "notification-block:"
"""How an automation's action in prefect.yaml names a notification block, whose id differs per server."""


class StackError(RuntimeError):
    """A part of the stack did not come up; the message says which and shows the end of its log."""


class ChildProcess:
    """A long-running subprocess in its own session, logging to a file, stopped with everything it started."""

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_file: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.cwd = cwd
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ChildProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM to the child's process group, SIGKILL to what is left after ``timeout`` seconds."""
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=timeout)
        _signal_group(self.process.pid, signal.SIGKILL)  # members of the group that outlived their leader


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def descendant_pids(pid: int) -> set[int]:
    """Every live process below ``pid``, read from ``ps`` (Linux and macOS alike)."""
    listing = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=True)
    children: dict[int, list[int]] = {}
    for line in listing.stdout.splitlines():
        child, parent = (int(field) for field in line.split())
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _reap(pids: set[int], timeout: float) -> None:
    """Stop processes that escaped their group (a worker's flow runs get sessions of their own)."""
    alive = {pid for pid in pids if pid_alive(pid)}
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {pid for pid in alive if pid_alive(pid)}
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for_http(url: str, child: ChildProcess | None, timeout: float = STARTUP_TIMEOUT) -> None:
    """Until ``url`` answers 200; fails early, with the child's log, if the child exits instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.running:
            raise StackError(f"{child.name} exited before {url} answered:\n{child.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=5).status_code == 200:
                return
        time.sleep(0.5)
    tail = f":\n{child.log_tail()}" if child is not None else ""
    raise StackError(f"{url} did not answer within {timeout:.0f} s{tail}")


def run_prefect(args: Sequence[str], *, env: Mapping[str, str], log_file: Path, timeout: float) -> None:
    """A one-shot Prefect CLI command; its output goes to the log and, on failure, into the error."""
    with log_file.open("ab") as log:
        log.write(f"\n$ prefect {' '.join(args)}\n".encode())
        log.flush()
        result = subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            env=dict(env),
            cwd=PROJECT_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-40:])
        raise StackError(f"prefect {' '.join(args)} failed (exit {result.returncode}):\n{tail}")


def project_deployments(project_file: Path = PREFECT_YAML) -> list[str]:
    """The names of the ``deployments:`` of ``prefect.yaml``."""
    data = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    return [deployment["name"] for deployment in data.get("deployments") or []]


def _automation_items(project_file: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(project_file.read_text(encoding="utf-8")) or {}
    return list(data.get("automations") or [])


def _block_reference(action: Mapping[str, Any]) -> str | None:
    """The block name of an action's ``block_document_id: notification-block:<name>``, or None."""
    reference = str(action.get("block_document_id", ""))
    return reference.removeprefix(BLOCK_REFERENCE) if reference.startswith(BLOCK_REFERENCE) else None


def referenced_blocks(project_file: Path = PREFECT_YAML) -> list[str]:
    """The notification blocks the ``automations:`` of ``prefect.yaml`` name, each once, in order."""
    names = [
        name
        for item in _automation_items(project_file)
        for action in item.get("actions") or []
        if (name := _block_reference(action)) is not None
    ]
    return list(dict.fromkeys(names))


def project_automations(
    project_file: Path = PREFECT_YAML, block_ids: Mapping[str, UUID] | None = None
) -> list[AutomationCore]:
    """The ``automations:`` of ``prefect.yaml``, read as ``prefect automation create --from-file`` reads them once
    each ``notification-block:<name>`` is replaced by that block's id from ``block_ids``."""
    from prefect.events.schemas.automations import AutomationCore

    automations = []
    for item in _automation_items(project_file):
        actions = []
        for action in item.get("actions") or []:
            name = _block_reference(action)
            if name is not None:
                if block_ids is None or name not in block_ids:
                    raise StackError(f"automation {item.get('name')!r} needs the notification block {name!r}")
                action = {**action, "block_document_id": str(block_ids[name])}
            actions.append(action)
        automations.append(AutomationCore.model_validate({**item, "actions": actions}))
    return automations


def notification_block_id(client: SyncPrefectClient, name: str, webhook_url: str) -> UUID:
    """The id of the notification block called ``name``, whatever its type; a Custom Webhook one posting
    ``{"subject", "text"}`` (what Slack and Teams incoming webhooks read) to ``webhook_url`` when there is none.

    The URL goes in the block's secrets, not its visible fields: a chat webhook URL is a credential. A block an
    operator made or changed in the UI is used as it is.
    """
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    found = client.request(
        "POST",
        "/block_documents/filter",
        json={
            "block_documents": {"name": {"any_": [name]}, "is_anonymous": {"eq_": False}},
            "block_schemas": {"block_capabilities": {"all_": ["notify"]}},
        },
    ).json()
    if len(found) > 1:
        kinds = ", ".join(sorted(document["block_type"]["slug"] for document in found))
        raise StackError(f"several notification blocks are named {name!r} ({kinds}): keep one")
    if found:
        return UUID(found[0]["id"])
    block = CustomWebhookNotificationBlock(
        name=name,
        url="{{webhook_url}}",
        json_data={"subject": "{{subject}}", "text": "{{body}}"},
        secrets={"webhook_url": webhook_url},
    )
    return block.save(name)


def apply_automations(api_url: str, webhook_url: str, project_file: Path = PREFECT_YAML) -> list[str]:
    """Create each automation of ``prefect.yaml``, or update the one of that name, and return their names; the
    notification blocks they name are found, or made pointing at ``webhook_url``, first.

    ``prefect deploy`` reads only the deployments; by name, so bringing the stack up again keeps one of each.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        block_ids = {name: notification_block_id(client, name, webhook_url) for name in referenced_blocks(project_file)}
        automations = project_automations(project_file, block_ids)
        for automation in automations:
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
            else:
                client.create_automation(automation)
    return [automation.name for automation in automations]


def prefect_env(base: Mapping[str, str], prefect_home: Path, api_url: str) -> dict[str, str]:
    """Prefect settings every child shares: one home, one API, no telemetry; a SQLite database unless one is set."""
    env = dict(base)
    env["PREFECT_HOME"] = str(prefect_home)
    env["PREFECT_API_URL"] = api_url
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.setdefault("PREFECT_API_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}")
    return env


def ingress_secret(settings: Settings, state: Path) -> str:
    """The configured ingress secret, or one generated once into the state folder (as the link key is)."""
    if settings.ingress_secret is not None:
        return settings.ingress_secret.get_secret_value()
    secret_file = state / "ingress-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    return secret_file.read_text().strip()


def _print_now(line: str) -> None:
    print(line, flush=True)


class Stack:
    """The parts of ``exstream-push up``, started in dependency order and stopped in reverse.

    ``say`` gets one line as each stage begins, naming what it waits for: the start takes about a minute (the
    server's database migrations and ``prefect deploy`` most of it), which should not pass in silence.
    """

    def __init__(self, settings: Settings, prefect_port: int, say: Callable[[str], None] = _print_now) -> None:
        self.settings = settings
        self.say = say
        self.state = (settings.home / "stack").resolve()
        self.logs = self.state / "logs"
        self.prefect_port = prefect_port
        self.prefect_url = f"http://{LOOPBACK}:{prefect_port}"
        self.children: list[ChildProcess] = []
        self.emulators: list[ServerThread | ApnsEmulator] = []
        self.devices_file = self.state / "devices.csv"
        """data/devices.csv with its web devices subscribed at this stack's Web Push emulator: what to import."""
        self.urls: dict[str, str] = {}
        self.exports: dict[str, str] = {}
        self.secret = ""

    def start(self) -> None:
        from exstream_push_dev.emulators.apns import DEFAULT_BUNDLE_ID, start_apns_emulator
        from exstream_push_dev.emulators.exstream import create_exstream_app
        from exstream_push_dev.emulators.fcm import create_fcm_app
        from exstream_push_dev.emulators.google_oauth import start_oauth_emulator
        from exstream_push_dev.emulators.operations import HOOK_PATH, create_operations_app
        from exstream_push_dev.emulators.samples import subscribe_web_devices
        from exstream_push_dev.emulators.server import ServerThread
        from exstream_push_dev.emulators.webpush import development_vapid_key, start_webpush_emulator

        self.logs.mkdir(parents=True, exist_ok=True)
        self.say("starting the emulators: Google OAuth2, FCM, APNs, Web Push, Exstream ...")
        key_file = self.state / "service-account.json"
        oauth = start_oauth_emulator(key_file, self.settings.fcm_project, port=port_or_free(OAUTH_PORT))
        self.emulators.append(oauth)
        fcm = ServerThread(create_fcm_app(tokens=oauth.app.state.oauth.tokens), port=port_or_free(FCM_PORT)).start()
        self.emulators.append(fcm)
        exstream = ServerThread(
            create_exstream_app(self.settings.data_dir / "exstream"), port=port_or_free(EXSTREAM_PORT)
        ).start()
        self.emulators.append(exstream)
        # One folder, so one development CA signs both TLS emulators and one EXSTREAM_PUSH_CA_FILE trusts them.
        emulator_files = self.state / "emulators"
        webpush = start_webpush_emulator(emulator_files, port=port_or_free(WEBPUSH_PORT))
        self.emulators.append(webpush)
        apns = start_apns_emulator(
            emulator_files, bundle_id=self.settings.apns_bundle_id or DEFAULT_BUNDLE_ID, port=port_or_free(APNS_PORT)
        )
        self.emulators.append(apns)
        if self.settings.operations_webhook_url is not None:
            webhook_url, operations_inbox = self.settings.operations_webhook_url.get_secret_value(), None
        else:  # failure notifications land in an inbox of the stack's own
            operations = ServerThread(create_operations_app(), port=port_or_free(OPERATIONS_PORT)).start()
            self.emulators.append(operations)
            webhook_url, operations_inbox = f"{operations.url}{HOOK_PATH}", f"{operations.url}/_emulator/notifications"
        # The browsers subscribe now: the emulator keeps their private keys, so only its own subscriptions work.
        subscribe_web_devices(
            self.settings.data_dir / "devices.csv", self.devices_file, webpush.url, webpush.tls.ca_file
        )
        self.secret = ingress_secret(self.settings, self.state)
        api_url = f"{self.prefect_url}/api"
        self.exports = {
            "PREFECT_API_URL": api_url,
            "EXSTREAM_PUSH_HOME": str(self.settings.home.resolve()),
            "EXSTREAM_PUSH_FCM_URL": fcm.url,
            "EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE": str(key_file),
            "EXSTREAM_PUSH_EXSTREAM_URL": f"{exstream.url}/orchestration",
            "EXSTREAM_PUSH_OTDS_URL": f"{exstream.url}/otdsws",
            **apns.environment(),
            "EXSTREAM_PUSH_WEBPUSH_VAPID_PRIVATE_KEY_FILE": str(development_vapid_key(emulator_files)),
            "EXSTREAM_PUSH_INGRESS_SECRET": self.secret,
        }
        if self.settings.database_url is None:  # a configured one is in the environment already, credentials too
            self.exports["EXSTREAM_PUSH_DATABASE_URL"] = self.settings.resolved_database_url
        env = prefect_env({**os.environ, **self.exports}, self.state / "prefect", api_url)

        self.say(f"starting the Prefect server on {self.prefect_url}, waiting for {api_url}/health ...")
        server = self._spawn(
            "Prefect server",
            ["-m", "prefect", "server", "start", "--host", LOOPBACK, "--port", str(self.prefect_port)],
            env,
        )
        wait_for_http(f"{api_url}/health", server)
        if server.pid is not None:  # commands on this home without PREFECT_API_URL run on this server meanwhile
            started = datetime.now(UTC).isoformat(timespec="seconds")
            record = ServerRecord(server.pid, self.prefect_port, api_url, started)
            write_record(stack_state_file(self.settings.home), record)
        deploy_log = self.logs / "deploy.log"
        self.say(f"creating the {WORK_POOL} process work pool ...")
        run_prefect(
            ["work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
            env=env,
            log_file=deploy_log,
            timeout=STARTUP_TIMEOUT,
        )
        self.say("registering the block types of the blocks package ...")
        run_prefect(["block", "register", "-m", "blocks"], env=env, log_file=deploy_log, timeout=STARTUP_TIMEOUT)
        deployments = project_deployments()
        self.say(f"deploying the {len(deployments)} deployments of prefect.yaml (log: {deploy_log}) ...")
        run_prefect(["deploy", "--all", "--no-prompt"], env=env, log_file=deploy_log, timeout=DEPLOY_TIMEOUT)
        self.say("creating the automations of prefect.yaml and the notification block they send through ...")
        try:
            apply_automations(api_url, webhook_url)
        except Exception as exc:  # the server answered health checks, so this is a real refusal worth showing
            raise StackError(f"the automations of prefect.yaml could not be created: {exc}") from exc
        self.say(f"starting the Prefect worker {WORKER_NAME} on the {WORK_POOL} pool ...")
        self._spawn(
            "Prefect worker",
            ["-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process", "--name", WORKER_NAME],
            env,
        )
        ingress_port = port_or_free(INGRESS_PORT)
        ingress_url = f"http://{LOOPBACK}:{ingress_port}"
        self.say(f"starting the ingress API, waiting for {ingress_url}/healthz ...")
        ingress = self._spawn(
            "ingress API",
            ["-m", "exstream_push.cli", "serve", "--host", LOOPBACK, "--port", str(ingress_port)],
            env,
        )
        wait_for_http(f"{ingress_url}/healthz", ingress)
        self.urls = {
            "Prefect UI": self.prefect_url,
            "Prefect API": api_url,
            "ingress API": ingress_url,
            "FCM emulator": f"{fcm.url}   (accepted messages: {fcm.url}/_emulator/messages)",
            "Google OAuth2 emulator": f"{oauth.url}/token   (service-account key: {key_file})",
            "APNs emulator": f"{apns.url}   (HTTP/2 over TLS; accepted notifications: {apns.url}/_emulator/messages)",
            "Web Push emulator": f"{webpush.url}   (subscribe: POST {webpush.url}/_emulator/subscriptions)",
            "Exstream emulator": f"{exstream.url}/orchestration   (received posts: {exstream.url}/_emulator/inbox)",
            "operations inbox": operations_inbox or "none: notifications go to EXSTREAM_PUSH_OPERATIONS_WEBHOOK_URL",
            "devices": f"{self.devices_file}   (data/devices.csv, web devices subscribed here: devices import it)",
            "logs": str(self.logs),
        }

    def _spawn(self, name: str, python_args: Sequence[str], env: Mapping[str, str]) -> ChildProcess:
        log_file = self.logs / f"{name.lower().replace(' ', '-')}.log"
        child = ChildProcess(name, [sys.executable, *python_args], env=env, cwd=PROJECT_ROOT, log_file=log_file)
        self.children.append(child.start())
        return child

    def dead_child(self) -> ChildProcess | None:
        return next((child for child in self.children if not child.running), None)

    def describe(self) -> Iterator[str]:
        width = max(len(name) for name in self.urls)
        for name, url in self.urls.items():
            yield f"{name:<{width}}  {url}"
        yield ""
        yield "to use the CLI against this stack:"
        for name, value in self.exports.items():
            yield f"  export {name}={value}"
        yield ""
        yield "exstream-push is up. Ctrl-C stops everything."

    def stop(self) -> None:
        """The ingress API and the worker (it stops taking runs) first, the server they report to after them, and
        the emulators last; flow runs the worker started in sessions of their own are stopped too."""
        stack_state_file(self.settings.home).unlink(missing_ok=True)
        escaped = {pid for child in self.children if child.pid for pid in descendant_pids(child.pid)}
        for child in reversed(self.children):
            child.stop()
        _reap(escaped, STOP_TIMEOUT)
        for emulator in reversed(self.emulators):
            emulator.stop()
        self.children.clear()
        self.emulators.clear()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run_stack(prefect_port: int) -> int:
    """Bring everything up, print where it is, and stop it all on Ctrl-C or SIGTERM: 0 then, 1 if a part failed."""
    settings = get_settings()
    stack = Stack(settings, prefect_port)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    # Explicitly, not by Python's default: a process started in the background by a shell without job control
    # inherits SIGINT ignored, and Python then leaves it ignored, so Ctrl-C (or a supervisor's SIGINT) did nothing.
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        stack.start()
        print("\n".join(stack.describe()), flush=True)
        while (dead := stack.dead_child()) is None:
            time.sleep(1.0)
        print(f"{dead.name} stopped unexpectedly:\n{dead.log_tail()}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    except StackError as exc:
        print(exc, file=sys.stderr, flush=True)
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        print("stopping ...", flush=True)
        stack.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
        print("stopped.", flush=True)
