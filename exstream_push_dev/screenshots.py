"""Screenshots of the Prefect UI for the README, taken from a real ``exstream-push up`` by headless Chromium.

    .venv/bin/python -m exstream_push_dev.screenshots [--out docs/screenshots]      (or: make screenshots)

It brings the stack up on a fresh temporary ``EXSTREAM_PUSH_HOME`` and free ports, imports the stack's devices while
the Prefect server is still starting, and lets the product start the run the way it does in operation: the
``exstream-watcher`` deployment finds the completed demo job of the Exstream emulator and the ``statement-ready``
trigger starts its flow run. (Should that run have started before the devices were in, the script starts one more
through the API, ``POST /api/deployments/{id}/create_flow_run``, which then sends.) Once the run is Completed it
captures, at 1440x900:

- ``deployments.png``: the Deployments page, every deployment of ``prefect.yaml``;
- ``flow-run-graph.png``: that statement-ready run's page, its task graph on top;
- ``summary-artifact.png``: the run's summary table artifact (its counts by status and reason);
- ``blocks.png``: the Blocks catalog narrowed to the four connection block types ``up`` registers;

then stops ``up`` with SIGINT, as Ctrl-C would, and waits for it to exit.

Chromium is driven over the DevTools protocol (its websocket, through the ``websockets`` package Prefect already
depends on) rather than ``chromium --screenshot``: the UI is a single-page app that fills itself from API calls
(and the task graph is drawn on a WebGL canvas), so each page is captured only once the text it must show is on
it and two screenshots a second apart are identical, and the blocks catalog can be searched. The page text is
checked against the demo job's customer data (ids, names, e-mail addresses, account numbers, document ids,
device ids and tokens): a page showing any of it fails the script instead of being saved.

A development tool: no product module imports it. Chromium comes from the system (``apt-get install chromium``
on Debian, which the script runs itself when root and Chromium is missing); PNGs are recompressed by ``optipng``
when it is installed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import xml.etree.ElementTree as ElementTree
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from exstream_push.settings import PROJECT_ROOT
from exstream_push.tasks.summary import summary_key

DEFAULT_OUT = Path("docs/screenshots")
WIDTH, HEIGHT = 1440, 900
UP_BANNER = "exstream-push is up."
SERVER_STAGE = "starting the Prefect server"
WORKER_STAGE = "starting the Prefect worker"
UP_TIMEOUT = 420.0
RUN_TIMEOUT = 300.0
WATCHER_GRACE = 180.0
"""How long the watcher has, once ``up`` is up, to have started the demo job's statement-ready run."""
STOP_TIMEOUT = 150.0
PAGE_TIMEOUT = 90.0
DEPLOYMENT = "statement-ready"
DEMO_JOB = "STMT-2026-11-DEMO"
CONNECTION_BLOCKS = ("APNs Connection", "Exstream Connection", "FCM Connection", "Web Push Connection")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
CUSTOMER_KEYS = {"CustomerId", "DocumentId", "CustomerName", "Email", "AccountNumber"}


class ScreenshotError(RuntimeError):
    """A step did not give what the screenshots need; the message says which."""


def say(line: str) -> None:
    print(f"screenshots: {line}", flush=True)


# --- Chromium -----------------------------------------------------------------------------------------------------


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def ensure_chromium() -> str:
    """The Chromium on PATH; installed from Debian's packages first when missing and this runs as root."""
    found = find_chromium()
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        say("no Chromium on PATH: installing Debian's chromium package with apt-get ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            if subprocess.run(command, env=env, check=False).returncode != 0:
                raise SystemExit(f"screenshots: `{' '.join(command)}` failed; install Chromium and run this again.")
        found = find_chromium()
        if found:
            return found
    raise SystemExit(
        "screenshots: no Chromium found (looked for " + ", ".join(CHROMIUM_NAMES) + " on PATH). Install it, "
        "e.g. `sudo apt-get install chromium` on Debian or Ubuntu, and run this again."
    )


class Browser:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, executable: str, profile: Path) -> None:
        self.executable = executable
        self.profile = profile
        self.process: subprocess.Popen[bytes] | None = None
        self.connection: Any = None
        self.next_id = 0

    def __enter__(self) -> Browser:
        try:
            self._start()
        except BaseException:
            self.__exit__()  # a browser that started but could not be reached is stopped too
            raise
        return self

    def _start(self) -> None:
        from websockets.sync.client import connect

        self.profile.mkdir(parents=True, exist_ok=True)
        port_file = self.profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)  # a reused profile's is a browser's gone
        argv = [
            self.executable,
            "--headless=new",
            "--no-sandbox",  # root in a container has no user namespace for Chromium's sandbox
            "--disable-gpu",  # WebGL (the task graph) falls back to SwiftShader, in software
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--force-color-profile=srgb",
            f"--window-size={WIDTH},{HEIGHT}",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        with (self.profile.parent / "chromium.log").open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise ScreenshotError(f"Chromium did not open its DevTools port (log: {self.profile.parent})")
            time.sleep(0.2)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as answer:
            targets = json.load(answer)
        page = next(target for target in targets if target["type"] == "page")
        self.connection = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)

    def __exit__(self, *exc: object) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.call("Browser.close")
            with contextlib.suppress(Exception):
                self.connection.close()
        if self.process is None:
            return
        for signum in (None, signal.SIGTERM, signal.SIGKILL):  # Browser.close first, then signals to its group
            if signum is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signum)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10 if self.connection is not None or signum is not None else 0.1)
                break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # helpers that outlived the browser

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command and its result; the events that come meanwhile are dropped."""
        self.next_id += 1
        command_id = self.next_id
        self.connection.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.connection.recv(timeout=60))
            if message.get("id") == command_id:
                if "error" in message:
                    raise ScreenshotError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise ScreenshotError(f"{expression!r} raised {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for_text(self, needles: list[str], *, absent: tuple[str, ...] = (), timeout: float = PAGE_TIMEOUT) -> str:
        """Until the page's text holds every needle and none of ``absent``; the text then."""
        deadline, text = time.monotonic() + timeout, ""
        while True:
            with contextlib.suppress(ScreenshotError):  # a navigation in progress has no document to read yet
                text = self.text()
                if all(needle in text for needle in needles) and not any(word in text for word in absent):
                    return text
            if time.monotonic() > deadline:
                missing = [needle for needle in needles if needle not in text]
                raise ScreenshotError(f"the page never showed {missing} (or still showed {absent}):\n{text[:2000]}")
            time.sleep(0.5)

    def type_into(self, selector: str, words: str) -> None:
        if not self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "if (!e) return false; e.focus(); return true; })()"
        ):
            raise ScreenshotError(f"no {selector} on the page")
        self.call("Input.insertText", text=words)
        self.evaluate("document.activeElement && document.activeElement.blur()")  # no blinking caret in the shot

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def settled_screenshot(self, timeout: float = 30.0) -> bytes:
        """A screenshot once the page stops changing: two taken a second apart are the same (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        previous = self.screenshot()
        while time.monotonic() < deadline:
            time.sleep(1.0)
            current = self.screenshot()
            if current == previous:
                return current
            previous = current
        return previous


# --- exstream-push up ---------------------------------------------------------------------------------------------


class UpProcess:
    """``exstream-push up`` in a session of its own, on its own home and Prefect port, its output collected."""

    def __init__(self, home: Path, prefect_port: int) -> None:
        env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "EXSTREAM_PUSH_"))}
        env.update({"EXSTREAM_PUSH_HOME": str(home), "PYTHONUNBUFFERED": "1"})
        self.home, self.env = home, env
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exstream_push.cli", "up", "--prefect-port", str(prefect_port)],
            env=env,
            cwd=home,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C here reaches this script, which stops `up` in order
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            print(f"  up | {line.rstrip()}", flush=True)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, start: str, timeout: float = UP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(start) for line in self.lines):
            if self.process.poll() is not None:
                self.reader.join(timeout=5)
                raise ScreenshotError(f"exstream-push up exited with {self.process.returncode} before {start!r}")
            if time.monotonic() > deadline:
                raise ScreenshotError(f"exstream-push up did not say {start!r} within {timeout:.0f} s")
            time.sleep(0.2)

    def url(self, name: str) -> str:
        found = re.search(rf"^{re.escape(name)}\s+(https?://\S+)", self.output, re.MULTILINE)
        if not found:
            raise ScreenshotError(f"exstream-push up printed no {name} URL")
        return found.group(1)

    def stop(self) -> int | None:
        """SIGINT, as Ctrl-C in its terminal; SIGKILL to it and everything below it if it does not exit in time."""
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            say(f"exstream-push up did not stop within {STOP_TIMEOUT:.0f} s of SIGINT: killing it")
            from exstream_push_dev.stack import descendant_pids

            for pid in descendant_pids(self.process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait()
            return None


def import_devices(up: UpProcess) -> datetime:
    """``devices import`` of the file ``up`` writes before it starts the server (its web devices subscribed at
    the stack's Web Push emulator), into the ledger of ``up``'s home; the moment it finished."""
    devices = up.home / "stack" / "devices.csv"
    deadline = time.monotonic() + 60
    while not devices.exists():
        if time.monotonic() > deadline:
            raise ScreenshotError(f"exstream-push up wrote no {devices}")
        time.sleep(0.2)
    done = subprocess.run(
        [sys.executable, "-m", "exstream_push.cli", "devices", "import", str(devices)],
        env=up.env,
        cwd=up.home,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ScreenshotError(f"devices import failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    say(done.stdout.strip())
    return datetime.now(UTC)


# --- the Prefect API ----------------------------------------------------------------------------------------------


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class PrefectApi:
    def __init__(self, api_url: str) -> None:
        self.client = httpx.Client(base_url=api_url, timeout=30)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        answer = self.client.post(path, json=body)
        answer.raise_for_status()
        return answer.json()

    def deployment_id(self, name: str) -> str:
        found = [d for d in self.post("/deployments/filter", {}) if d["name"] == name]
        if not found:
            raise ScreenshotError(f"no deployment {name!r} on the server")
        return found[0]["id"]

    def deployment_names(self) -> list[str]:
        return sorted(d["name"] for d in self.post("/deployments/filter", {}))

    def runs_of(self, deployment_id: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.post("/flow_runs/filter", body)

    def flow_run(self, run_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/flow_runs/{run_id}")
        answer.raise_for_status()
        return answer.json()

    def wait_until_ended(self, run_id: str, timeout: float = RUN_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (run := self.flow_run(run_id))["state_type"] not in TERMINAL_STATES:
            if time.monotonic() > deadline:
                raise ScreenshotError(f"flow run {run['name']} still {run['state_name']} after {timeout:.0f} s")
            time.sleep(1.0)
        return run

    def task_run_count(self, run_id: str) -> int:
        return self.post("/task_runs/count", {"flow_runs": {"id": {"any_": [run_id]}}})

    def summary_artifact(self, run_id: str) -> dict[str, Any]:
        """The run's markdown summary, under its use case's stable key."""
        key = summary_key(DEPLOYMENT)
        body = {"artifacts": {"flow_run_id": {"any_": [run_id]}, "key": {"any_": [key]}}}
        found = self.post("/artifacts/filter", body)
        if not found:
            raise ScreenshotError(f"flow run {run_id} published no {key} artifact")
        return found[0]


def demo_job_run(api: PrefectApi, devices_in: datetime, job_id: str) -> dict[str, Any]:
    """The statement-ready run of the demo job that sent to the imported devices, Completed.

    The watcher's: started after the devices were in. Failing that (it started before, or not within
    ``WATCHER_GRACE``), one started through the API now, which finds the devices changed and sends."""
    deployment = api.deployment_id(DEPLOYMENT)
    say("waiting for the exstream-watcher to start statement-ready on the demo job ...")
    deadline = time.monotonic() + WATCHER_GRACE
    while time.monotonic() < deadline:
        runs = [run for run in api.runs_of(deployment) if (run.get("parameters") or {}).get("job_id") == job_id]
        if runs:
            run = api.wait_until_ended(runs[0]["id"])
            started = _time(run.get("start_time"))
            if run["state_type"] == "COMPLETED" and started is not None and started > devices_in:
                return run
            say(f"the watcher's run {run['name']} ended {run['state_name']}, started {started}: starting another")
            break
        time.sleep(1.0)
    else:
        say(f"no statement-ready run from the watcher within {WATCHER_GRACE:.0f} s: starting one through the API")
    created = api.post(f"/deployments/{deployment}/create_flow_run", {"parameters": {"job_id": job_id}})
    run = api.wait_until_ended(created["id"])
    if run["state_type"] != "COMPLETED":
        message = (run.get("state") or {}).get("message")
        raise ScreenshotError(f"flow run {run['name']} ended {run['state_name']}: {message}")
    return run


# --- customer data the pages must not show ------------------------------------------------------------------------


def customer_data(data_dir: Path, devices_file: Path) -> set[str]:
    """Every customer's id, name, e-mail, account number and document id in the demo job, and every device's id and
    token: strings no screenshot may contain (its run names carry the job id only)."""
    found: set[str] = set()
    for manifest in (data_dir / "exstream" / "jobs").glob("*/_STDDELIVERYFILE.xml"):
        for _, element in ElementTree.iterparse(manifest):
            if element.tag == "key" and element.get("name") in CUSTOMER_KEYS and element.text:
                found.add(element.text.strip())
            element.clear()
    with devices_file.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            found.update(value for key in ("customer_id", "device_id", "token") if (value := row.get(key)))
    return {value for value in found if len(value) >= 6}


def check_private(name: str, text: str, private: set[str]) -> None:
    shown = sorted(value for value in private if value in text)
    if shown:
        raise ScreenshotError(f"{name} would show customer data ({len(shown)} values, e.g. {shown[:3]}); not saved")


# --- the shots ----------------------------------------------------------------------------------------------------


def optimise(png: Path) -> None:
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", "-strip", "all", str(png)], check=False)


def take_screenshots(
    browser: Browser, ui: str, api: PrefectApi, run: dict[str, Any], out: Path, private: set[str]
) -> list[Path]:
    artifact = api.summary_artifact(run["id"])
    if not re.search(r"\*\*[1-9][\d,]* sent\*\*", artifact["data"]):
        raise ScreenshotError(f"flow run {run['name']} sent nothing: its summary would show an empty run")
    task_runs = api.task_run_count(run["id"])
    deployments = api.deployment_names()[:10]  # the page's first ten, sorted by name as the page is
    shots: list[tuple[str, str, list[str], tuple[str, ...], str | None]] = [
        ("deployments.png", f"{ui}/deployments", ["Deployments", "Ready", *deployments], (), None),
        (
            "flow-run-graph.png",
            f"{ui}/runs/flow-run/{run['id']}",
            [run["name"], "Completed", f"{task_runs} Task run", "Logs"],
            (),
            None,
        ),
        (
            "summary-artifact.png",
            f"{ui}/artifacts/artifact/{artifact['id']}",
            [artifact["description"].splitlines()[0].strip(), "status", "reason or code", "count", "sent"],
            (),
            None,
        ),
        ("blocks.png", f"{ui}/blocks/catalog", list(CONNECTION_BLOCKS), ("AWS Credentials",), "Connection"),
    ]
    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    for name, url, needles, absent, search in shots:
        say(f"{name}: {url}")
        browser.goto(url)
        if search is not None:  # the catalog loaded (its first card among them), then narrowed by its search field
            browser.wait_for_text(needles[:1])
            browser.type_into('input[placeholder^="Search"]', search)
        text = browser.wait_for_text(needles, absent=absent)
        image = browser.settled_screenshot()
        check_private(name, browser.text() + text, private)
        path = out / name
        path.write_bytes(image)
        optimise(path)
        saved.append(path)
        say(f"{path}: {path.stat().st_size // 1024} KB")
    return saved


def run(out: Path, prefect_port: int | None, keep: bool) -> list[Path]:
    from exstream_push.settings import get_settings
    from exstream_push_dev.emulators.exstream import job_uuid
    from exstream_push_dev.emulators.server import free_port

    chromium = ensure_chromium()
    work = Path(tempfile.mkdtemp(prefix="exstream-push-screenshots-"))
    home = work / "home"
    home.mkdir()
    say(f"bringing exstream-push up on {home} ...")
    up = UpProcess(home, prefect_port or free_port())
    try:
        up.wait_for_line(SERVER_STAGE)
        devices_in = import_devices(up)
        up.wait_for_line(UP_BANNER)
        if not any(line.startswith(WORKER_STAGE) for line in up.lines):
            raise ScreenshotError("exstream-push up never started its worker")
        api = PrefectApi(up.url("Prefect API"))
        statement = demo_job_run(api, devices_in, job_uuid(DEMO_JOB))
        say(f"flow run {statement['name']} ({statement['id']}) is {statement['state_name']}")
        private = customer_data(get_settings().data_dir, home / "stack" / "devices.csv")
        with Browser(chromium, work / "chromium") as browser:
            return take_screenshots(browser, up.url("Prefect UI"), api, statement, out, private)
    finally:
        say("stopping exstream-push up ...")
        code = up.stop()
        say(f"exstream-push up exited with {code}")
        if keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exstream_push_dev.screenshots",
        description="Screenshots of the Prefect UI (deployments, a statement-ready run's graph, its summary artifact, "
        "the connection blocks) from a real `exstream-push up`, for the README.",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs (default: %(default)s)")
    parser.add_argument("--prefect-port", type=int, help="port of the stack's Prefect server (default: a free one)")
    parser.add_argument("--keep", action="store_true", help="keep the stack's home and Chromium's log afterwards")
    args = parser.parse_args(argv)
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    try:
        saved = run(out.resolve(), args.prefect_port, args.keep)
    except ScreenshotError as exc:
        print(f"screenshots: {exc}", file=sys.stderr, flush=True)
        return 1
    for path in saved:
        print(path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
