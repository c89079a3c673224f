"""A local stand-in for OpenText Exstream orchestration and its OTDS token service (development tool).

It implements the subset exstream-push uses, shaped after ``exstream-orchestration-v1.openapi.json``:
responses wrapped as ``{status, data, page}``, the ``filter=key:value;key:v1,v2`` syntax, ``offset``/``count``
paging (``offset`` counts items; the spec does not say), and flow steps reached through flow instances: a
``FlowStep`` carries no job id, so a job's steps are ``flow-instances?filter=jobId:J`` then
``flow-steps?filter=flowInstanceId:I``.

It is as strict as the real service where the product could otherwise get away with something: every list serves
at most ``page_cap`` items per page whatever ``count`` asks (``page`` tells the truth about it); ids are uuids
(``format: uuid`` in the spec); a domain other than the emulator's is a 404; batch input answers 404 for an
unknown channel and 415 for a content type the channel does not take; OTDS tokens expire after ``token_ttl``
seconds (401 ``invalid_token``); ``error_shape="spring"`` answers errors as Spring Boot's error controller does
instead of ``GenericResponse``.

Data folder layout (every part optional)::

    DATA_DIR/jobs/{name}/job.json                Job fields (camelCase, as the API's Job schema); status
                                                 defaults to "complete", mode to "BATCH", dates to the
                                                 manifest's mtime
    DATA_DIR/jobs/{name}/_STDDELIVERYFILE.xml    the delivery manifest, streamed from disk on download
    DATA_DIR/jobs/{name}/ExstreamMessages.dat    the engine message file

A folder's job id is its name when that is a uuid, else ``job_uuid(name)``, so fixtures keep readable names.

Each job has one flow instance and two flow steps, with ids derived from the job id so they stay stable
across restarts (see ``flow_instance_id``, ``input_step_id``, ``docgen_step_id``): an ``input`` step
("FileInput", nothing retrievable) and the ``communication`` step ("docgen") that owns both files.

Routes::

    POST   /otdsws/oauth2/token                      client_credentials (form or HTTP basic)
    GET    {API}/runtime/{domain}/jobs                filter, offset, count, fetchDeleted
    GET    {API}/runtime/{domain}/jobs/{id}
    POST   {API}/runtime/{domain}/jobs/{id}/reprocessing     the job goes back to "started"; answers its id
                                                             as text (the spec's bare string)
    GET    {API}/runtime/{domain}/flow-instances      filter (jobId, ...), offset, count
    GET    {API}/runtime/{domain}/flow-instances/{id}
    GET    {API}/runtime/{domain}/flow-steps          filter (flowInstanceId, ...), offset, count
    GET    {API}/runtime/{domain}/flow-steps/{id}
    GET    {API}/runtime/{domain}/flow-steps/{id}/delivery-file
    GET    {API}/runtime/{domain}/flow-steps/{id}/message-file
    POST   {API}/inputs/batch/{domain}/{channel}     starts a new job in status "started" (404 for an
                                                 unknown channel, 415 for a content type it does not take)
    GET    /_emulator/inbox      every POST received (secrets redacted); DELETE clears it
    POST   /_emulator/jobs       add or change a job: JSON job fields, plus "deliveryFile" / "messageFile"
                                 texts or "path" to a job folder; run-time files go to a scratch folder

where ``{API}`` is ``/orchestration/api/v1``.

``/_emulator/*`` needs no token and is not recorded. Run it standalone with
``exstream-push emulate --exstream-data tests/fixtures/exstream``.
"""

from __future__ import annotations

import base64
import json
import math
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from exstream_push.settings import BatchInputChannels

API = "/orchestration/api/v1"
TOKEN_PATH = "/otdsws/oauth2/token"
DELIVERY_FILE = "_STDDELIVERYFILE.xml"
MESSAGE_FILE = "ExstreamMessages.dat"
INBOX_BODY_LIMIT = 8 << 20
DEFAULT_PAGE_SIZE = 20
DEFAULT_PAGE_CAP = 50
HAND_BACK_CONTENT_TYPES = ("text/csv",)
ErrorShape = Literal["generic", "spring"]
ERROR_SHAPES: tuple[ErrorShape, ...] = ("generic", "spring")
REDACTED = "[redacted]"

JOB_STATUSES = frozenset({"canceled", "complete", "deleted", "started", "waiting", "holding", "error", "uninitialized"})
TERMINAL_STATUSES = frozenset({"canceled", "complete", "deleted", "error"})
JOB_FIELDS = (
    "id",
    "domainId",
    "channel",
    "mode",
    "status",
    "flowModelType",
    "msg",
    "externalId",
    "triggeredBy",
    "aggregatedFMCSnapshotId",
    "startDate",
    "endDate",
    "expirationDate",
)
_STEP_STATUS = {"deleted": "canceled", "uninitialized": "created"}
_INSTANCE_STATUS = {"deleted": "canceled", "uninitialized": "started"}
_ID_NAMESPACE = uuid.UUID("5f1d7c3e-2b7a-4c39-9a53-0e6f1f5b9a11")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_SECRET_FORM_FIELDS = frozenset({"client_secret", "password"})

# filter key -> (field, how to match); the keys are the ones the OpenAPI description lists.
_DATE_KEYS = {
    "startDateStart": ("startDate", "from"),
    "startDateEnd": ("startDate", "to"),
    "endDateStart": ("endDate", "from"),
    "endDateEnd": ("endDate", "to"),
    "expiringDateStart": ("expirationDate", "from"),
    "expiringDateEnd": ("expirationDate", "to"),
}
JOB_FILTER = {
    "ids": ("id", "in"),
    "channel": ("channel", "eq"),
    "externalId": ("externalId", "eq"),
    "triggeredBy": ("triggeredBy", "eq"),
    "statuses": ("status", "in"),
    "mode": ("mode", "in"),
    "flowModelTypes": ("flowModelType", "in"),
    "aggregatedFMCSnapshotIds": ("aggregatedFMCSnapshotId", "in"),
    "domainId": ("domainId", "eq"),
    **_DATE_KEYS,
}
FLOW_INSTANCE_FILTER = {
    "ids": ("id", "in"),
    "jobId": ("jobId", "eq"),
    "externalId": ("externalId", "eq"),
    "statuses": ("status", "in"),
    "flowModelTypes": ("flowModelType", "in"),
    "domainId": ("domainId", "eq"),
    **_DATE_KEYS,
}
FLOW_STEP_FILTER = {
    "ids": ("id", "in"),
    "flowInstanceId": ("flowInstanceId", "eq"),
    "previousStepId": ("previousStepId", "eq"),
    "stepName": ("stepName", "text"),
    "displayName": ("displayName", "text"),
    "externalId": ("externalId", "text"),
    "caseSensitive": ("", "option"),
    "statuses": ("status", "in"),
    "stepTypes": ("stepType", "in"),
    "deliveryFileRetrievable": ("deliveryFileRetrievable", "bool"),
    **_DATE_KEYS,
    "queueDateStart": ("queueDate", "from"),
    "queueDateEnd": ("queueDate", "to"),
    "executeDateStart": ("executeDate", "from"),
    "executeDateEnd": ("executeDate", "to"),
}


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def job_uuid(name: str) -> str:
    """The job id for a readable name (a job folder's, a test's): the name itself if it is a uuid, else uuid5."""
    return name.lower() if _is_uuid(name) else str(uuid.uuid5(_ID_NAMESPACE, f"job/{name}"))


def _derived_id(job_id: str, part: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{job_id}/{part}"))


def flow_instance_id(job_id: str) -> str:
    return _derived_id(job_id, "flow-instance")


def input_step_id(job_id: str) -> str:
    return _derived_id(job_id, "input")


def docgen_step_id(job_id: str) -> str:
    """The step whose delivery and message files a job folder holds."""
    return _derived_id(job_id, "docgen")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return _iso(datetime.now(UTC))


class ApiError(Exception):
    """Turned into an error body of the emulator's ``error_shape``."""

    def __init__(self, status_code: int, details: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(details)
        self.status_code = status_code
        self.details = details
        self.headers = headers


def _error_response(
    status_code: int, details: str, path: str, shape: ErrorShape, headers: dict[str, str] | None = None
) -> JSONResponse:
    """``GenericResponse`` as the spec has it, or what a Spring Boot service answers from its error controller
    (``timestamp/status/error/message/path``, with the ``details`` a ``@ControllerAdvice`` commonly adds)."""
    reason = HTTPStatus(status_code).phrase
    if shape == "spring":
        body: dict[str, Any] = {
            "timestamp": _now(),
            "status": status_code,
            "error": reason,
            "message": details,
            "path": path,
            "details": f"uri={path}",
        }
    else:
        body = {"status": "failure", "message": reason, "details": details}
    return JSONResponse(body, status_code=status_code, headers=headers)


@dataclass
class EmulatedJob:
    fields: dict[str, Any]
    delivery_file: Path | None = None
    message_file: Path | None = None

    @property
    def id(self) -> str:
        return self.fields["id"]

    def as_job(self) -> dict[str, Any]:
        return {name: self.fields[name] for name in JOB_FIELDS if self.fields.get(name) is not None}

    def as_flow_instance(self) -> dict[str, Any]:
        instance = {
            "id": flow_instance_id(self.id),
            "jobId": self.id,
            "domainId": self.fields.get("domainId"),
            "status": _INSTANCE_STATUS.get(self.fields["status"], self.fields["status"]),
            "startDate": self.fields.get("startDate"),
            "endDate": self.fields.get("endDate"),
            "externalId": self.fields.get("externalId"),
            "flowModelType": self.fields.get("flowModelType"),
            "inputRetrievable": False,
        }
        return {name: value for name, value in instance.items() if value is not None}

    def as_flow_steps(self) -> list[dict[str, Any]]:
        started = self.fields.get("startDate")
        steps = [
            {
                "id": input_step_id(self.id),
                "flowInstanceId": flow_instance_id(self.id),
                "stepName": "FileInput",
                "displayName": "File input",
                "status": "created" if self.fields["status"] == "uninitialized" else "complete",
                "stepType": "input",
                "queueDate": started,
                "startDate": started,
                "endDate": started,
                "deliveryFileRetrievable": False,
                "messageFileRetrievable": False,
            },
            {
                "id": docgen_step_id(self.id),
                "previousStepId": input_step_id(self.id),
                "flowInstanceId": flow_instance_id(self.id),
                "stepName": "docgen",
                "displayName": self.fields.get("channel") or "docgen",
                "status": _STEP_STATUS.get(self.fields["status"], self.fields["status"]),
                "stepType": "communication",
                "queueDate": started,
                "startDate": started,
                "executeDate": started,
                "endDate": self.fields.get("endDate"),
                "msg": self.fields.get("msg"),
                "externalId": self.fields.get("externalId"),
                "deliveryFileRetrievable": self.delivery_file is not None,
                "messageFileRetrievable": self.message_file is not None,
            },
        ]
        return [{name: value for name, value in step.items() if value is not None} for step in steps]


def _parse_moment(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _date_matches(field_value: str | None, bound: str, direction: str) -> bool:
    """``yyyy-MM-dd`` bounds compare by day, inclusive; a full date-time bound compares exactly."""
    if field_value is None:
        return False
    moment = _parse_moment(field_value)
    if len(bound) == 10:
        day, limit = moment.date(), date.fromisoformat(bound)
        return day >= limit if direction == "from" else day <= limit
    limit_moment = _parse_moment(bound)
    return moment >= limit_moment if direction == "from" else moment <= limit_moment


def parse_filter(raw: str | None, allowed: dict[str, tuple[str, str]]) -> dict[str, str]:
    """``key:value;key:v1,v2`` into a dict; an unknown key is a 400, so a typo does not match everything."""
    parsed: dict[str, str] = {}
    for part in (raw or "").split(";"):
        if not part.strip():
            continue
        key, sep, value = part.partition(":")
        key = key.strip()
        if not sep or key not in allowed:
            raise ApiError(400, f"invalid filter entry {part!r}; known keys: {', '.join(sorted(allowed))}")
        parsed[key] = value.strip()
    for key, value in parsed.items():
        field, how = allowed[key]
        if field in {"startDate", "endDate", "expirationDate", "queueDate", "executeDate"}:
            try:
                _parse_moment(value)
            except ValueError:
                raise ApiError(400, f"filter {key} needs a yyyy-MM-dd date, got {value!r}") from None
        elif how in {"bool", "option"} and value.lower() not in {"true", "false"}:
            raise ApiError(400, f"filter {key} needs true or false, got {value!r}")
    return parsed


def _matches(item: dict[str, Any], criteria: dict[str, str], allowed: dict[str, tuple[str, str]]) -> bool:
    case_sensitive = criteria.get("caseSensitive", "true").lower() == "true"
    for key, value in criteria.items():
        field, how = allowed[key]
        actual = item.get(field)
        if how == "in":
            if actual not in {v.strip() for v in value.split(",") if v.strip()}:
                return False
        elif how == "eq":
            if actual != value:
                return False
        elif how == "text":
            if actual is None or (actual != value if case_sensitive else actual.lower() != value.lower()):
                return False
        elif how == "bool":
            if bool(actual) != (value.lower() == "true"):
                return False
        elif how in {"from", "to"} and not _date_matches(actual, value, how):
            return False
    return True


def _int_param(request: Request, name: str, default: int, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ApiError(400, f"{name} must be at least {minimum}")
    return value


def _page(request: Request, items: list[dict[str, Any]], cap: int) -> JSONResponse:
    """``offset`` items skipped, then at most ``min(count, cap)``; ``page`` reports the size actually served."""
    offset = _int_param(request, "offset", 0, 0)
    size = min(_int_param(request, "count", DEFAULT_PAGE_SIZE, 1), cap)
    page = {
        "pageSize": size,
        "pageOffset": offset,
        "totalElements": len(items),
        "totalPages": math.ceil(len(items) / size),
        "currentPageNumber": offset // size,
    }
    return JSONResponse({"status": "success", "data": items[offset : offset + size], "page": page})


def hand_back_channels() -> dict[str, tuple[str, ...]]:
    """The product's hand-back channels as configured (``EXSTREAM_PUSH_CHANNEL_*``), each taking CSV."""
    return {name: HAND_BACK_CONTENT_TYPES for name in BatchInputChannels().model_dump().values()}


def _redact_form(body: str) -> str:
    """Blank out secret values and keep everything else exactly as sent."""
    pieces = []
    for piece in body.split("&"):
        raw_key = piece.partition("=")[0]
        pieces.append(f"{raw_key}={REDACTED}" if unquote_plus(raw_key) in _SECRET_FORM_FIELDS else piece)
    return "&".join(pieces)


def _redact_header(name: str, value: str) -> str:
    if name.lower() not in _SECRET_HEADERS:
        return value
    scheme, _, credentials = value.partition(" ")
    return f"{scheme} {REDACTED}" if credentials else REDACTED


class ExstreamEmulator:
    """The emulator's state: jobs, issued tokens and the inbox of received POSTs; safe to use from tests.

    Tests script a flaky or failing download with ``file_faults`` and count attempts with ``file_requests``.
    ``channels`` maps each batch-input channel to the content types it takes (default: ``hand_back_channels()``).
    """

    def __init__(
        self,
        data_dir: Path | None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        domain: str = "default",
        token_ttl: int = 3600,
        page_cap: int = DEFAULT_PAGE_CAP,
        error_shape: ErrorShape = "generic",
        channels: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        if page_cap < 1:
            raise ValueError("page_cap must be at least 1")
        if error_shape not in ERROR_SHAPES:
            raise ValueError(f"error_shape must be one of {', '.join(ERROR_SHAPES)}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.domain = domain
        self.token_ttl = token_ttl
        self.page_cap = page_cap
        self.error_shape: ErrorShape = error_shape
        self.channels = {name: frozenset(types) for name, types in (channels or hand_back_channels()).items()}
        self.auth_failures: Counter[str] = Counter()
        """Requests refused for their bearer token, by reason: "missing", "unknown", "expired"."""
        self.jobs: dict[str, EmulatedJob] = {}
        self._inbox: list[dict[str, Any]] = []
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self.file_faults: dict[str, list[int]] = {}
        """HTTP statuses a flow step's file downloads answer first, one per request, before the file is served."""
        self.file_requests: Counter[str] = Counter()
        """File download requests received, by flow step id."""
        jobs_dir = data_dir / "jobs" if data_dir else None
        if jobs_dir and jobs_dir.is_dir():
            for folder in sorted(p for p in jobs_dir.iterdir() if p.is_dir()):
                self.load_job_folder(folder)

    # jobs

    def load_job_folder(self, folder: Path, overrides: dict[str, Any] | None = None) -> EmulatedJob:
        """Add a job from a ``jobs/{name}/`` folder (its id is ``job_uuid(name)``), or merge it into one."""
        if not folder.is_dir():
            raise ValueError(f"no job folder at {folder}")
        job_json = folder / "job.json"
        fields = json.loads(job_json.read_text()) if job_json.exists() else {}
        fields.setdefault("id", job_uuid(folder.name))
        fields.update(overrides or {})
        delivery = folder / DELIVERY_FILE
        messages = folder / MESSAGE_FILE
        if fields["id"] not in self.jobs:
            stamp_source = delivery if delivery.exists() else folder
            default_date = _iso(datetime.fromtimestamp(stamp_source.stat().st_mtime, UTC))
            fields.setdefault("startDate", default_date)
            if fields.get("status", "complete") in TERMINAL_STATUSES:
                fields.setdefault("endDate", default_date)
        return self.put_job(
            fields,
            delivery_file=delivery if delivery.exists() else None,
            message_file=messages if messages.exists() else None,
        )

    def put_job(
        self,
        fields: dict[str, Any],
        *,
        delivery_file: Path | None = None,
        message_file: Path | None = None,
        delivery_text: str | None = None,
        message_text: str | None = None,
    ) -> EmulatedJob:
        """Add a job, or merge ``fields`` into an existing one (e.g. ``{"id": j, "status": "complete"}``).

        An id must be a uuid, as the API's are; ``job_uuid("readable-name")`` makes one.
        """
        unknown = set(fields) - set(JOB_FIELDS)
        if unknown:
            raise ValueError(f"unknown job fields {sorted(unknown)}; known: {', '.join(JOB_FIELDS)}")
        job_id = str(fields.get("id") or uuid.uuid4())
        if not _is_uuid(job_id):
            raise ValueError(f"job id {job_id!r} is not a uuid; job_uuid({job_id!r}) gives {job_uuid(job_id)}")
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                job = EmulatedJob(
                    {
                        "id": job_id,
                        "domainId": self.domain,
                        "channel": "batch",
                        "mode": "BATCH",
                        "status": "complete",
                        "flowModelType": "COMMUNICATION",
                        "startDate": _now(),
                    }
                )
            merged = {**job.fields, **{k: v for k, v in fields.items() if k != "id"}}
            status = merged["status"]
            if status not in JOB_STATUSES:
                raise ValueError(f"unknown job status {status!r}; known: {', '.join(sorted(JOB_STATUSES))}")
            if merged["mode"] not in {"BATCH", "ONDEMAND"}:
                raise ValueError(f"unknown job mode {merged['mode']!r}")
            if "endDate" not in fields:
                if status not in TERMINAL_STATUSES:
                    merged.pop("endDate", None)
                elif status != job.fields["status"] or not merged.get("endDate"):
                    merged["endDate"] = _now()
            job.fields = merged
            if delivery_file is not None:
                job.delivery_file = delivery_file
            if message_file is not None:
                job.message_file = message_file
            if delivery_text is not None:
                job.delivery_file = self._write_scratch(job_id, DELIVERY_FILE, delivery_text)
            if message_text is not None:
                job.message_file = self._write_scratch(job_id, MESSAGE_FILE, message_text)
            self.jobs[job_id] = job
            return job

    def _write_scratch(self, job_id: str, name: str, text: str) -> Path:
        """Run-time files never go into the seed folder, which is usually a checked-in fixture."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="exstream-emulator-")
        target = Path(self._scratch.name) / "jobs" / job_id / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    def _domain_jobs(self, domain: str) -> list[EmulatedJob]:
        """The domain's jobs in start order; a domain other than the emulator's does not exist (404)."""
        if domain != self.domain:
            raise ApiError(404, f"Domain {domain} not found")
        with self._lock:
            jobs = [job for job in self.jobs.values() if job.fields.get("domainId") == domain]
        return sorted(jobs, key=lambda job: (job.fields.get("startDate") or "", job.id))

    def _job(self, domain: str, job_id: str) -> EmulatedJob:
        for job in self._domain_jobs(domain):
            if job.id == job_id:
                return job
        raise ApiError(404, f"Job {job_id} not found in domain {domain}")

    def _step(self, domain: str, step_id: str) -> tuple[EmulatedJob, dict[str, Any]]:
        for job in self._domain_jobs(domain):
            for step in job.as_flow_steps():
                if step["id"] == step_id:
                    return job, step
        raise ApiError(404, f"Flow step {step_id} not found in domain {domain}")

    # tokens

    def issue_token(self, client_id: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = (client_id, time.monotonic() + self.token_ttl)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}

    def revoke_tokens(self) -> None:
        """Make every issued token invalid, as an OTDS restart or key rollover would."""
        with self._lock:
            self._tokens.clear()

    def expire_tokens(self) -> None:
        """Make every issued token expired now, as a server whose clock runs ahead of the client's would."""
        now = time.monotonic()
        with self._lock:
            self._tokens = {token: (client, now) for token, (client, _) in self._tokens.items()}

    def token_client(self, token: str) -> str | None:
        """The client a live token was issued to; None for an unknown or expired one."""
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def _token_refusal(self, token: str) -> str:
        with self._lock:
            entry = self._tokens.get(token)
        return "unknown" if entry is None else "expired"

    # inbox

    @property
    def inbox(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._inbox)

    def clear_inbox(self) -> None:
        with self._lock:
            self._inbox.clear()

    async def record(self, request: Request) -> bytes:
        """Record a POST (secrets redacted, body capped) and hand back the body for the handler."""
        kept = bytearray()
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if len(kept) < INBOX_BODY_LIMIT:
                kept.extend(chunk[: INBOX_BODY_LIMIT - len(kept)])
        text = bytes(kept).decode("utf-8", errors="replace")
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            text = _redact_form(text)
        entry = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {name: _redact_header(name, value) for name, value in request.headers.items()},
            "body": text,
            "truncated": size > len(kept),
        }
        with self._lock:
            self._inbox.append(entry)
        return bytes(kept)

    def authorize(self, request: Request) -> str:
        """The OAuth client behind the request's bearer token; 401 without a live one (RFC 6750 challenge)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            self._count_refusal("missing")
            raise ApiError(401, "a valid OTDS bearer token is required", {"WWW-Authenticate": "Bearer"})
        client = self.token_client(token)
        if client is None:
            reason = self._token_refusal(token)
            self._count_refusal(reason)
            described = "The access token expired" if reason == "expired" else "The access token is invalid"
            challenge = f'Bearer error="invalid_token", error_description="{described}"'
            raise ApiError(
                401, f"a valid OTDS bearer token is required: {described.lower()}", {"WWW-Authenticate": challenge}
            )
        return client

    def _count_refusal(self, reason: str) -> None:
        with self._lock:
            self.auth_failures[reason] += 1

    # handlers

    async def token(self, request: Request) -> Response:
        body = await self.record(request)
        form = dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(encoded).decode().partition(":")
            except ValueError:
                return JSONResponse({"error": "invalid_client"}, status_code=401)
        if form.get("grant_type") != "client_credentials":
            return JSONResponse(
                {
                    "error": "unsupported_grant_type",
                    "error_description": "only client_credentials is emulated",
                },
                status_code=400,
            )
        if not client_id:
            return JSONResponse({"error": "invalid_request", "error_description": "client_id missing"}, 400)
        if (self.client_id is not None and client_id != self.client_id) or (
            self.client_secret is not None and client_secret != self.client_secret
        ):
            return JSONResponse(
                {"error": "invalid_client", "error_description": "client authentication failed"},
                status_code=401,
            )
        return JSONResponse(self.issue_token(client_id))

    async def list_jobs(self, request: Request) -> Response:
        self.authorize(request)
        criteria = parse_filter(request.query_params.get("filter"), JOB_FILTER)
        fetch_deleted = request.query_params.get("fetchDeleted", "false").lower() == "true"
        jobs = [job.as_job() for job in self._domain_jobs(request.path_params["domain"])]
        jobs = [job for job in jobs if (job["status"] == "deleted") == fetch_deleted]
        if fetch_deleted:
            criteria.pop("statuses", None)
        return _page(request, [job for job in jobs if _matches(job, criteria, JOB_FILTER)], self.page_cap)

    async def get_job(self, request: Request) -> Response:
        self.authorize(request)
        job = self._job(request.path_params["domain"], request.path_params["id"])
        return JSONResponse({"status": "success", "data": job.as_job()})

    async def reprocess_job(self, request: Request) -> Response:
        """The spec answers a bare string (``*/*``, ``type: string``): the job id, as plain text."""
        await self.record(request)
        self.authorize(request)
        job = self._job(request.path_params["domain"], request.path_params["id"])
        self.put_job({"id": job.id, "status": "started", "startDate": _now()})
        return Response(job.id, media_type="text/plain")

    async def list_flow_instances(self, request: Request) -> Response:
        self.authorize(request)
        criteria = parse_filter(request.query_params.get("filter"), FLOW_INSTANCE_FILTER)
        instances = [job.as_flow_instance() for job in self._domain_jobs(request.path_params["domain"])]
        return _page(request, [i for i in instances if _matches(i, criteria, FLOW_INSTANCE_FILTER)], self.page_cap)

    async def get_flow_instance(self, request: Request) -> Response:
        self.authorize(request)
        wanted = request.path_params["id"]
        for job in self._domain_jobs(request.path_params["domain"]):
            if flow_instance_id(job.id) == wanted:
                return JSONResponse({"status": "success", "data": job.as_flow_instance()})
        raise ApiError(404, f"Flow instance {wanted} not found in domain {request.path_params['domain']}")

    async def list_flow_steps(self, request: Request) -> Response:
        self.authorize(request)
        criteria = parse_filter(request.query_params.get("filter"), FLOW_STEP_FILTER)
        jobs = self._domain_jobs(request.path_params["domain"])
        steps = [step for job in jobs for step in job.as_flow_steps()]
        return _page(request, [step for step in steps if _matches(step, criteria, FLOW_STEP_FILTER)], self.page_cap)

    async def get_flow_step(self, request: Request) -> Response:
        self.authorize(request)
        _, step = self._step(request.path_params["domain"], request.path_params["id"])
        return JSONResponse({"status": "success", "data": step})

    def _file_response(self, request: Request, kind: str) -> Response:
        self.authorize(request)
        step_id = request.path_params["id"]
        with self._lock:
            self.file_requests[step_id] += 1
            faults = self.file_faults.get(step_id)
            fault = faults.pop(0) if faults else None
        if fault is not None:
            raise ApiError(fault, f"emulated fault on flow step {step_id}")
        job, step = self._step(request.path_params["domain"], step_id)
        is_docgen = step["id"] == docgen_step_id(job.id)
        path = (job.delivery_file if kind == "delivery" else job.message_file) if is_docgen else None
        if path is None or not path.exists():
            raise ApiError(404, f"Flow step {step['id']} has no {kind} file")
        download = request.query_params.get("download", "false").lower() == "true"
        media_type = "application/xml" if kind == "delivery" else "text/plain"
        return FileResponse(path, media_type=media_type, filename=path.name if download else None)

    async def delivery_file(self, request: Request) -> Response:
        return self._file_response(request, "delivery")

    async def message_file(self, request: Request) -> Response:
        return self._file_response(request, "message")

    async def batch_input(self, request: Request) -> Response:
        """404 for a domain or channel that does not exist, 415 for a content type the channel does not take."""
        await self.record(request)
        client = self.authorize(request)
        domain, channel = request.path_params["domain"], request.path_params["channel"]
        if domain != self.domain:
            raise ApiError(404, f"Domain {domain} not found")
        if channel not in self.channels:
            raise ApiError(404, f"Input channel {channel} not found in domain {domain}")
        content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if content_type not in self.channels[channel]:
            taken = ", ".join(sorted(self.channels[channel]))
            raise ApiError(415, f"Input channel {channel} takes {taken}, not {content_type or 'no content type'}")
        job = self.put_job(
            {
                "domainId": request.path_params["domain"],
                "channel": request.path_params["channel"],
                "mode": "BATCH",
                "status": "started",
                "triggeredBy": client,
                "startDate": _now(),
            }
        )
        started = {"id": flow_instance_id(job.id), "jobId": job.id, "status": "started"}
        return JSONResponse({"status": "success", "data": [started]})

    async def unknown_route(self, request: Request) -> Response:
        """Still records POSTs, so a client calling a wrong path shows up in the inbox."""
        if request.method == "POST":
            await self.record(request)
        if request.url.path.startswith(f"{API}/"):
            self.authorize(request)
        raise ApiError(404, f"no emulated route for {request.method} {request.url.path}")

    async def get_inbox(self, request: Request) -> Response:
        return JSONResponse(self.inbox)

    async def delete_inbox(self, request: Request) -> Response:
        self.clear_inbox()
        return Response(status_code=204)

    async def post_job(self, request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            raise ApiError(400, "body must be a JSON object") from None
        if not isinstance(payload, dict):
            raise ApiError(400, "body must be a JSON object")
        delivery_text = payload.pop("deliveryFile", None)
        message_text = payload.pop("messageFile", None)
        folder = payload.pop("path", None)
        try:
            if folder is not None:
                job = self.load_job_folder(Path(folder), overrides=payload)
                if delivery_text is not None or message_text is not None:
                    job = self.put_job({"id": job.id}, delivery_text=delivery_text, message_text=message_text)
            else:
                job = self.put_job(payload, delivery_text=delivery_text, message_text=message_text)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        body = {
            "status": "success",
            "data": job.as_job(),
            "flowInstanceId": flow_instance_id(job.id),
            "stepIds": [step["id"] for step in job.as_flow_steps()],
        }
        return JSONResponse(body, status_code=201)


def _guarded(handler: Callable[[Request], Any], shape: Callable[[], ErrorShape]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error_response(exc.status_code, exc.details, request.url.path, shape(), exc.headers)

    return endpoint


def create_exstream_app(
    data_dir: Path | None,
    *,
    client_id: str | None = None,
    client_secret: str | None = None,
    domain: str = "default",
    token_ttl: int = 3600,
    page_cap: int = DEFAULT_PAGE_CAP,
    error_shape: ErrorShape = "generic",
    channels: Mapping[str, Collection[str]] | None = None,
) -> Starlette:
    """An emulator seeded from ``data_dir``; any client may get a token unless credentials are given."""
    emulator = ExstreamEmulator(
        data_dir,
        client_id=client_id,
        client_secret=client_secret,
        domain=domain,
        token_ttl=token_ttl,
        page_cap=page_cap,
        error_shape=error_shape,
        channels=channels,
    )
    runtime = f"{API}/runtime/{{domain}}"
    table: list[tuple[str, str, Callable[[Request], Any]]] = [
        (TOKEN_PATH, "POST", emulator.token),
        (f"{runtime}/jobs", "GET", emulator.list_jobs),
        (f"{runtime}/jobs/{{id}}", "GET", emulator.get_job),
        (f"{runtime}/jobs/{{id}}/reprocessing", "POST", emulator.reprocess_job),
        (f"{runtime}/flow-instances", "GET", emulator.list_flow_instances),
        (f"{runtime}/flow-instances/{{id}}", "GET", emulator.get_flow_instance),
        (f"{runtime}/flow-steps", "GET", emulator.list_flow_steps),
        (f"{runtime}/flow-steps/{{id}}", "GET", emulator.get_flow_step),
        (f"{runtime}/flow-steps/{{id}}/delivery-file", "GET", emulator.delivery_file),
        (f"{runtime}/flow-steps/{{id}}/message-file", "GET", emulator.message_file),
        (f"{API}/inputs/batch/{{domain}}/{{channel}}", "POST", emulator.batch_input),
        ("/_emulator/inbox", "GET", emulator.get_inbox),
        ("/_emulator/inbox", "DELETE", emulator.delete_inbox),
        ("/_emulator/jobs", "POST", emulator.post_job),
    ]

    def shape() -> ErrorShape:
        return emulator.error_shape

    routes = [Route(path, _guarded(handler, shape), methods=[method]) for path, method, handler in table]
    any_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    routes.append(Route("/{path:path}", _guarded(emulator.unknown_route, shape), methods=any_method))
    app = Starlette(routes=routes)
    app.state.exstream = emulator
    return app
