"""A small client for the OpenText Exstream orchestration API, authenticated through OTDS.

Exstream documents no completion webhook, so exstream-push polls jobs, walks a job's flow instances to its
flow steps (a flow step carries no job id) and downloads the delivery manifest of the step that has one.
Manifests can be hundreds of MB: downloads and uploads are streamed, never held in memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from exstream_push.errors import DependencyUnavailable, ExstreamPushError

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_MAX_ERROR_TEXT = 500


class ExstreamError(ExstreamPushError):
    """A failed call, named by method, path, HTTP status and the server's own message; never a credential.

    The CLI ends a command with it as one line; no answer at all, or a server error, exits as a dependency that is
    unavailable (69), anything else as an error (1). Whether a task retries it is the classification table's call.
    """

    def __init__(self, method: str, path: str, status_code: int | None, message: str) -> None:
        self.method = method
        self.path = path
        self.status_code = status_code
        self.message = message
        status = f"HTTP {status_code}" if status_code is not None else "no response"
        super().__init__(f"Exstream {method} {path} failed: {status}: {message}")
        if status_code is None or status_code >= 500:
            self.exit_code = DependencyUnavailable.exit_code


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class ExstreamJob(_Model):
    """The ``Job`` fields exstream-push reads; statuses stay strings so a new one does not break parsing."""

    id: str
    domain_id: str | None = None
    channel: str | None = None
    mode: str | None = None
    status: str
    flow_model_type: str | None = None
    msg: str | None = None
    external_id: str | None = None
    triggered_by: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None


class FlowStep(_Model):
    """A step of a job's flow; the docgen step is the one whose delivery file is retrievable."""

    id: str
    flow_instance_id: str | None = None
    previous_step_id: str | None = None
    step_name: str | None = None
    display_name: str | None = None
    step_type: str | None = None
    status: str | None = None
    msg: str | None = None
    external_id: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None
    delivery_file_retrievable: bool = False
    message_file_retrievable: bool = False


def _filter(criteria: Mapping[str, str | Sequence[str] | None]) -> str | None:
    """The API's ``key:value;key:v1,v2`` syntax; a value holding ``;`` or ``,`` cannot be expressed in it."""
    parts = []
    for key, value in criteria.items():
        if value is None:
            continue
        values = [value] if isinstance(value, str) else list(value)
        for item in values:
            if ";" in item or "," in item:
                raise ValueError(f"filter value for {key} cannot contain ';' or ',': {item!r}")
        parts.append(f"{key}:{','.join(values)}")
    return ";".join(parts) or None


def _server_message(response: httpx.Response) -> str:
    """The reason and the server's own message, whichever error body it sends; never the body as a whole.

    ``GenericResponse`` (the spec's): ``message`` is the reason, ``details`` the text. Spring Boot's error
    controller: ``error`` is the reason, ``message`` the text (often blank in production), ``details`` what an
    advice adds. OTDS (OAuth 2.0): ``error`` and ``error_description``.
    """
    try:
        body = response.json()
    except ValueError:
        return response.text[:_MAX_ERROR_TEXT].strip() or response.reason_phrase
    if not isinstance(body, dict):
        return response.reason_phrase
    if "timestamp" in body and isinstance(body.get("status"), int):
        text = _text(body.get("message")) or _text(body.get("details"))
        parts = [_text(body.get("error")) or response.reason_phrase, text]
    elif "error" in body:
        parts = [_text(body.get("error")), _text(body.get("error_description"))]
    else:
        parts = [_text(body.get("message")) or response.reason_phrase, _text(body.get("details"))]
    return ": ".join(part for part in parts if part)[:_MAX_ERROR_TEXT] or response.reason_phrase


def _text(value: Any) -> str:
    """A body field if it is text (Spring's placeholder for a hidden message counts as none); a structure, which
    could hold anything, is never echoed."""
    return value.strip() if isinstance(value, str) and value.strip() != "No message available" else ""


class ExstreamClient:
    """Orchestration API calls for one domain, with a cached OTDS client-credentials token.

    The token is renewed ``TOKEN_REFRESH_MARGIN`` seconds before it expires, or after ``1 - TOKEN_REFRESH_SHARE``
    of its lifetime when that lifetime is short; a 401 all the same (clock skew, a revoked token) renews it once.
    """

    TOKEN_REFRESH_MARGIN = 60.0
    TOKEN_REFRESH_SHARE = 0.2
    PAGE_SIZE = 100

    def __init__(
        self,
        base_url: str,
        domain: str,
        *,
        otds_url: str,
        client_id: str,
        client_secret: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.domain = domain
        self.otds_url = otds_url.rstrip("/")
        self.client_id = client_id
        self._client_secret = client_secret
        self._http = httpx.Client(timeout=timeout, transport=transport)
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ExstreamClient({self.base_url!r}, {self.domain!r}, client_id={self.client_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ExstreamClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # the API

    def list_jobs(
        self,
        *,
        statuses: Sequence[str] | None = None,
        mode: str | None = "BATCH",
        channel: str | None = None,
        external_id: str | None = None,
        ids: Sequence[str] | None = None,
        ended_since: date | None = None,
    ) -> list[ExstreamJob]:
        """Every matching job, all pages; ``ended_since`` is inclusive and by day, as the API's filter is."""
        criteria = {
            "ids": ids,
            "mode": mode,
            "statuses": statuses,
            "channel": channel,
            "externalId": external_id,
            "endDateStart": ended_since.isoformat() if ended_since else None,
        }
        return [ExstreamJob.model_validate(item) for item in self._paged("jobs", _filter(criteria))]

    def get_job(self, job_id: str) -> ExstreamJob:
        return ExstreamJob.model_validate(self._data("GET", f"{self._runtime}/jobs/{job_id}"))

    def flow_steps(self, job_id: str) -> list[FlowStep]:
        """All steps of a job, found through its flow instances."""
        steps = []
        for instance in self._paged("flow-instances", _filter({"jobId": job_id})):
            found = self._paged("flow-steps", _filter({"flowInstanceId": instance["id"]}))
            steps.extend(FlowStep.model_validate(item) for item in found)
        return steps

    def get_flow_step(self, step_id: str) -> FlowStep:
        return FlowStep.model_validate(self._data("GET", f"{self._runtime}/flow-steps/{step_id}"))

    def download_delivery_file(self, step_id: str, dest: Path) -> Path:
        """Stream the step's ``_STDDELIVERYFILE.xml`` to ``dest``."""
        return self._download(f"{self._runtime}/flow-steps/{step_id}/delivery-file", dest)

    def download_message_file(self, step_id: str, dest: Path) -> Path:
        """Stream the step's engine message file (``ExstreamMessages.dat``) to ``dest``."""
        return self._download(f"{self._runtime}/flow-steps/{step_id}/message-file", dest)

    def post_batch_input(
        self,
        channel: str,
        body: bytes | Path,
        *,
        content_type: str = "text/csv",
        headers: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Feed driver data to a batch input channel; returns the started flow instances (id, jobId, status).

        ``headers`` reach the flow as variables when named ``exstream-variable-*``. A Path is streamed.
        """
        sent = {**(headers or {}), "Content-Type": content_type}
        content: bytes | Callable[[], Iterator[bytes]]
        if isinstance(body, Path):
            sent["Content-Length"] = str(body.stat().st_size)
            content = partial(_file_chunks, body)
        else:
            content = body
        data = self._data("POST", f"/api/v1/inputs/batch/{self.domain}/{channel}", content=content, headers=sent)
        return list(data or [])

    def reprocess_job(self, job_id: str) -> dict[str, Any]:
        """Ask Exstream to run the job again; the API documents a bare string answer, wrapped here if so."""
        path = f"{self._runtime}/jobs/{job_id}/reprocessing"
        with self._request("POST", path) as response:
            response.read()
        try:
            body = response.json()
        except ValueError:
            return {"data": response.text}
        return body if isinstance(body, dict) else {"data": body}

    # plumbing

    @property
    def _runtime(self) -> str:
        return f"/api/v1/runtime/{self.domain}"

    def _paged(self, resource: str, filter_value: str | None) -> list[dict[str, Any]]:
        """Every item, by what the server reports: ``offset`` advances by the items received (the server may
        serve fewer than ``count`` per page), until ``page.totalElements`` are in.

        A page that comes back empty before then (a server counting ``offset`` in pages, or a list shrinking
        under us) is an ``ExstreamError``, never a silently shorter list. Without ``totalElements`` an empty
        page is the end.
        """
        path = f"{self._runtime}/{resource}"
        items: list[dict[str, Any]] = []
        while True:
            params: dict[str, str | int] = {"offset": len(items), "count": self.PAGE_SIZE}
            if filter_value:
                params["filter"] = filter_value
            body = self._json("GET", path, params=params)
            page = body.get("data") or []
            total = (body.get("page") or {}).get("totalElements")
            if not isinstance(total, int):
                total = None
            if not page:
                if total is not None and len(items) < total:
                    message = f"page at offset {len(items)} is empty although totalElements is {total}"
                    raise ExstreamError("GET", self._path(path), 200, message)
                return items
            items.extend(page)
            if total is not None and len(items) >= total:
                return items

    def _path(self, path: str) -> str:
        """The URL path a call went to, as errors name it."""
        return httpx.URL(self.base_url + path).path

    def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._json(method, path, **kwargs).get("data")

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        with self._request(method, path, **kwargs) as response:
            response.read()
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ExstreamError(method, response.request.url.path, response.status_code, "answer is not a JSON object")
        return body

    def _download(self, path: str, dest: Path) -> Path:
        """Write to a sibling ``.part`` file first, so a broken transfer never leaves a truncated manifest."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        part_file = dest.with_name(dest.name + ".part")
        try:
            with self._request("GET", path) as response, part_file.open("wb") as out:
                for chunk in response.iter_bytes(_CHUNK):
                    out.write(chunk)
            part_file.replace(dest)
        finally:
            part_file.unlink(missing_ok=True)
        return dest

    @contextmanager
    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        content: bytes | Callable[[], Iterator[bytes]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """A streamed response, closed on exit; retried once with a fresh token on a 401.

        A callable ``content`` makes the body anew for each attempt, so a streamed upload can be sent twice.
        Transport failures while the body is read surface as ``ExstreamError`` too.
        """
        response = self._send(method, path, params, content, headers)
        if response.status_code == 401:
            response.close()
            log.info("Exstream %s %s answered 401; fetching a new OTDS token", method, path)
            self._forget_token()
            response = self._send(method, path, params, content, headers)
        url_path = response.request.url.path
        try:
            if response.is_error:
                response.read()
                raise ExstreamError(method, url_path, response.status_code, _server_message(response))
            yield response
        except httpx.HTTPError as exc:
            raise ExstreamError(method, url_path, response.status_code, f"{type(exc).__name__}: {exc}") from None
        finally:
            response.close()

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str | int] | None,
        content: bytes | Callable[[], Iterator[bytes]] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Response:
        request = self._http.build_request(
            method,
            self.base_url + path,
            params=params,
            content=content() if callable(content) else content,
            headers={**(headers or {}), "Authorization": f"Bearer {self._access_token()}"},
        )
        try:
            return self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ExstreamError(method, request.url.path, None, f"{type(exc).__name__}: {exc}") from None

    def _access_token(self) -> str:
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_expires:
                self._token, lifetime = self._fetch_token()
                margin = min(self.TOKEN_REFRESH_MARGIN, lifetime * self.TOKEN_REFRESH_SHARE)
                self._token_expires = time.monotonic() + lifetime - margin
            return self._token

    def _forget_token(self) -> None:
        with self._token_lock:
            self._token = None

    def _fetch_token(self) -> tuple[str, float]:
        url = f"{self.otds_url}/oauth2/token"
        path = httpx.URL(url).path
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
        }
        try:
            response = self._http.post(url, data=form)
        except httpx.HTTPError as exc:
            raise ExstreamError("POST", path, None, f"{type(exc).__name__}: {exc}") from None
        if response.is_error:
            raise ExstreamError("POST", path, response.status_code, _server_message(response))
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "access_token" not in body:
            raise ExstreamError("POST", path, response.status_code, "OTDS answer has no access_token")
        lifetime = float(body.get("expires_in") or 0)
        log.debug("OTDS token for %s obtained, valid %.0f s", self.client_id, lifetime)
        return body["access_token"], lifetime


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            yield chunk
