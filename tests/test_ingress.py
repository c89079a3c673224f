"""The signed ingress, served for real on loopback: who gets in, what is refused, and what survives a Prefect outage."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prefect.settings import PREFECT_API_URL
from sqlalchemy import func, select

from exstream_push.content.links import customer_ref, document_ref
from exstream_push.ingress.app import IngressConfigurationError, create_app, serve
from exstream_push.ingress.signing import SIGNATURE_HEADER, sign
from exstream_push.ledger import (
    Device,
    EngagementEvent,
    Ledger,
    OpsAlert,
    OutboxEvent,
    Preference,
    SeenRequest,
    TrackingEvent,
)
from exstream_push.prefect_events import drain_outbox, enqueue, pending_count
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.server import ServerThread, free_port
from tests.test_prefect_events import FakePrefectEvents, wait_for_events

SECRET = b"ingress-test-secret"
SAMPLES = Path("/work/shared/reference/exstream/tracking-event-samples.json")
LEDGER_TABLES = (Device, Preference, EngagementEvent, TrackingEvent, OpsAlert, OutboxEvent, SeenRequest)

FAILED_DELIVERY = {
    "expctr": {
        "schemaVersion": "1.0",
        "schemaType": "Exstream-Email-Failed",
        "schemaSource": "Statements",
        "eventId": "trk-failed-1",
        "eventDate": "2026-11-02T08:00:00.120Z",
    },
    "exstreamJob": {"communicationId": "comm-77", "status": "failed", "domain": "Bank"},
    "user": {"CustomerId": "C0001", "CustomerEmail": "jane.doe@example.com", "CustomerLastname": "Doe"},
}
NOT_DELIVERED = {
    "expctr": {"schemaType": "Exstream-Email-NDLV", "eventId": "trk-ndlv-1", "eventDate": "2026-11-02T08:01:00Z"},
    "user": {"CustomerEmail": "john.roe@example.com"},
}


def outage_alert(alert_id: str = "OPS-1", **changes: Any) -> dict[str, Any]:
    return {
        "alert_id": alert_id,
        "kind": "outage",
        "severity": "critical",
        "customer_ids": ["C0001", "C0002"],
        "message_key": "outage",
        "occurred_at": "2026-11-02T07:55:00+00:00",
        **changes,
    }


@dataclass
class Ingress:
    url: str
    ledger: Ledger

    def signed(self, path: str, payload: Any, *, secret: bytes = SECRET, at: float | None = None) -> httpx.Request:
        body = json.dumps(payload).encode()
        header = sign(secret, int(time.time() if at is None else at), body)
        return httpx.Request(
            "POST",
            f"{self.url}{path}",
            content=body,
            headers={"X-Signature": header, "Content-Type": "application/json"},
        )

    def post(self, path: str, payload: Any, **signing: Any) -> httpx.Response:
        return send(self.signed(path, payload, **signing))

    def counts(self) -> dict[str, int]:
        with self.ledger.engine.connect() as conn:
            return {
                model.__name__: conn.scalar(select(func.count()).select_from(model.__table__)) or 0
                for model in LEDGER_TABLES
            }


def send(request: httpx.Request) -> httpx.Response:
    with httpx.Client() as client:
        return client.send(request)


@pytest.fixture
def ingress_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(home))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", f"sqlite:///{home / 'ledger.db'}")
    monkeypatch.setenv("EXSTREAM_PUSH_INGRESS_SECRET", SECRET.decode())
    monkeypatch.setenv("EXSTREAM_PUSH_LINK_SECRET", "test-link-secret")
    return home


@pytest.fixture
def prefect_down() -> str:
    """An events URL where nothing listens: Prefect is down for as long as the test says."""
    return f"http://127.0.0.1:{free_port()}/api"


@pytest.fixture
def ingress(ingress_env: Path, prefect_down: str) -> Iterator[Ingress]:
    settings = get_settings()
    with ServerThread(create_app(settings, prefect_api_url=prefect_down)) as server:
        yield Ingress(server.url, ledger_for(settings))


def record_statement_document(ledger: Ledger, document_id: str, customer_id: str) -> str:
    ref = document_ref(b"test-link-secret", "policy-change", document_id)  # as a push carries it: opaque
    ledger.record_documents(
        [
            {
                "use_case": "policy-change",
                "document_id": document_id,
                "job_id": "JOB-1",
                "step_id": "docgen",
                "position": 1,
                "customer_id": customer_id,
                "document_type": "policy",
                "locale": "en",
                "ref": ref,
                "first_seen_at": datetime.now(UTC),
            }
        ]
    )
    return ref


SIGNED_ROUTES = [
    ("/v1/devices", {"customer_id": "C1", "device_id": "D1", "platform": "ios", "token": "t"}),
    ("/v1/preferences", {"customer_id": "C1", "push_opt_in": False}),
    (
        "/v1/engagement-events",
        {
            "event_id": "e1",
            "type": "opened",
            "document_ref": "r",
            "customer_id": "C1",
            "occurred_at": "2026-11-02T08:00Z",
        },
    ),
    ("/v1/exstream/events", FAILED_DELIVERY),
    ("/v1/ops/alerts", outage_alert()),
]


@pytest.mark.parametrize(("route", "body"), SIGNED_ROUTES, ids=[route for route, _ in SIGNED_ROUTES])
def test_unsigned_mis_signed_stale_and_replayed_requests_get_401_and_change_nothing(
    ingress: Ingress, route: str, body: dict[str, Any]
) -> None:
    now = time.time()
    refused = {
        "missing": httpx.Request("POST", f"{ingress.url}{route}", json=body),
        "wrong secret": ingress.signed(route, body, secret=b"another-secret"),
        "stale": ingress.signed(route, body, at=now - 310),
        "from the future": ingress.signed(route, body, at=now + 310),
        "not our header format": httpx.Request(
            "POST", f"{ingress.url}{route}", json=body, headers={"X-Signature": "sha256=abc"}
        ),
        # The signature is checked before anything is parsed: a malformed body with a bad signature is still 401.
        "malformed and unsigned": httpx.Request("POST", f"{ingress.url}{route}", content=b"{not json"),
    }
    tampered = ingress.signed(route, body)
    refused["body changed after signing"] = httpx.Request(
        "POST",
        tampered.url,
        headers={"X-Signature": tampered.headers["X-Signature"], "Content-Type": "application/json"},
        content=json.dumps({**body, "customer_id": "C2"}).encode(),
    )

    before = ingress.counts()
    for case, request in refused.items():
        response = send(request)
        assert response.status_code == 401, case
        assert response.json()["detail"], case
    assert ingress.counts() == before

    accepted = ingress.signed(route, body)
    assert send(accepted).status_code in (200, 202)
    after_first = ingress.counts()
    assert after_first["SeenRequest"] == 1

    replay = send(httpx.Request("POST", accepted.url, headers=accepted.headers, content=accepted.content))
    assert replay.status_code == 401
    assert "already received" in replay.json()["detail"]
    assert ingress.counts() == after_first


def test_the_same_alert_signed_anew_is_accepted_and_changes_nothing(ingress: Ingress) -> None:
    assert ingress.post("/v1/ops/alerts", outage_alert()).json() == {"alert_id": "OPS-1", "duplicate": False}
    after_first = ingress.counts()
    # Another second, so another signature: a new request, for an alert already received.
    retry = ingress.post("/v1/ops/alerts", outage_alert(severity="info"), at=time.time() + 2)
    assert retry.status_code == 202 and retry.json() == {"alert_id": "OPS-1", "duplicate": True}
    assert ingress.counts() == {**after_first, "SeenRequest": 2}
    with ingress.ledger.engine.connect() as conn:
        assert conn.scalar(select(OpsAlert.severity)) == "critical"


@pytest.mark.parametrize(
    ("route", "payload", "field"),
    [
        ("/v1/devices", {"customer_id": "C1", "device_id": "D1", "platform": "pager", "token": "t"}, ["platform"]),
        ("/v1/devices", {"customer_id": "C1", "device_id": "D1", "platform": "ios"}, ["token"]),
        (
            "/v1/devices",
            {"customer_id": "C1", "device_id": "D1", "platform": "ios", "token": "t", "timezone": "Mars/Olympus"},
            ["timezone"],
        ),
        ("/v1/preferences", {"customer_id": "C1", "preferred_channels": {"statements": "fax"}}, None),
        (
            "/v1/engagement-events",
            [
                {
                    "event_id": "e1",
                    "type": "opened",
                    "document_id": "D",
                    "customer_id": "C1",
                    "occurred_at": "2026-11-02",
                }
            ],
            [0, "occurred_at"],
        ),
        (
            "/v1/engagement-events",
            {"event_id": "e1", "type": "liked", "document_id": "D", "customer_id": "C1", "occurred_at": "x"},
            [0, "type"],
        ),
        (
            "/v1/engagement-events",
            {
                "event_id": "e1",
                "type": "sent",
                "document_id": "D",
                "customer_id": "C1",
                "occurred_at": "2026-11-02T08:00Z",
            },
            [0],
        ),
        ("/v1/exstream/events", [FAILED_DELIVERY, {"expctr": {"eventId": "x"}}], [1, "expctr", "schemaType"]),
        ("/v1/exstream/events", {**FAILED_DELIVERY, "expctr": {"schemaType": "X", "eventDate": "noon"}}, None),
        ("/v1/ops/alerts", outage_alert(kind="flood"), ["kind"]),
        ("/v1/ops/alerts", outage_alert(message_key="../secret"), ["message_key"]),
        ("/v1/ops/alerts", outage_alert(segment="nobody-defined-this"), None),
        ("/v1/ops/alerts", {**outage_alert(), "customer_ids": None, "segment": "nobody-defined-this"}, ["segment"]),
    ],
)
def test_a_body_that_fails_validation_gets_422_naming_the_field(
    ingress: Ingress, route: str, payload: Any, field: list[Any] | None
) -> None:
    before = ingress.counts()
    response = ingress.post(route, payload)
    assert response.status_code == 422
    errors = response.json()["detail"]
    if field is not None:
        assert ["body", *field] in [error["loc"] for error in errors]
    else:  # a rule across fields: the message names them
        assert any(
            name in error["msg"] or name in error["loc"]
            for error in errors
            for name in ("preferred_channels", "eventDate", "segment", "customer_ids")
        ), errors
    assert ingress.counts() == before  # not even the signature is remembered


def test_not_json_gets_422(ingress: Ingress) -> None:
    body = b'{"alert_id": '
    request = httpx.Request(
        "POST",
        f"{ingress.url}/v1/ops/alerts",
        content=body,
        headers={"X-Signature": sign(SECRET, int(time.time()), body), "Content-Type": "application/json"},
    )
    response = send(request)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


# --- hostile callers: every bad request gets a 4xx naming the reason, none a 500, and nothing is written ---

SMALL_LIMIT = 65_536  # EXSTREAM_PUSH_INGRESS_MAX_BODY_BYTES of the small_ingress fixture
HEX = "0" * 64


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def fresh_timestamp() -> int:
    return int(time.time())


def raw_request(ingress: Ingress, path: str, body: bytes, header: str | None = None) -> httpx.Request:
    """``body`` as it is, signed unless a header is given: for bodies ``json.dumps`` would never produce."""
    signature = header if header is not None else sign(SECRET, fresh_timestamp(), body)
    return httpx.Request(
        "POST",
        f"{ingress.url}{path}",
        content=body,
        headers={"X-Signature": signature, "Content-Type": "application/json"},
    )


def alert_with(**changes: Any) -> bytes:
    return json.dumps(outage_alert(**changes)).encode()


# (case, route, body, header or None to sign it, status, words of the reason, field named in loc or None)
HOSTILE: list[tuple[str, str, Callable[[], bytes], Callable[[], str] | None, int, str, list[Any] | None]] = [
    (
        "t= with 5,000 digits",
        "/v1/ops/alerts",
        alert_with,
        lambda: f"t={'1' * 5000},v1={HEX}",
        401,
        "longer than 512 characters",
        None,
    ),
    ("t= of 13 digits", "/v1/ops/alerts", alert_with, lambda: f"t={'1' * 13},v1={HEX}", 401, "at most 12 digits", None),
    ("t= not digits", "/v1/ops/alerts", alert_with, lambda: f"t=12e9,v1={HEX}", 401, "unix seconds", None),
    ("t= twice", "/v1/ops/alerts", alert_with, lambda: f"t=1,t=2,v1={HEX}", 401, "must be t=", None),
    (
        "20,000 v1= values",
        "/v1/ops/alerts",
        alert_with,
        lambda: sign(SECRET, fresh_timestamp(), alert_with()) + f",v1={HEX}" * 20_000,
        401,
        "longer than 512 characters",
        None,
    ),
    (
        "five v1= values, one of them right",
        "/v1/ops/alerts",
        alert_with,
        lambda: sign(SECRET, fresh_timestamp(), alert_with()) + f",v1={HEX}" * 4,
        401,
        "more than 4 v1= signatures",
        None,
    ),
    ("v1= not a digest", "/v1/ops/alerts", alert_with, lambda: f"t={fresh_timestamp()},v1=abc", 401, "64 hex", None),
    (
        "a tracking event nested 256 levels deep",
        "/v1/exstream/events",
        lambda: json.dumps({**FAILED_DELIVERY, "extra": json.loads(nested(256))}).encode(),
        None,
        422,
        "nested more than 32 levels",
        None,
    ),
    (
        "a body nested 5,000 levels deep",
        "/v1/exstream/events",
        lambda: nested(5000).encode(),
        None,
        422,
        "nested more than 32 levels",
        None,
    ),
    (
        "a number of 5,000 digits",
        "/v1/ops/alerts",
        lambda: b'{"alert_id": ' + b"1" * 5000 + b"}",
        None,
        422,
        "not JSON the ingress accepts",
        None,
    ),
    (
        "bytes that are not UTF-8",
        "/v1/preferences",
        lambda: b'{"customer_id": "C\xff\xfe", "push_opt_in": true}',
        None,
        422,
        "not JSON the ingress accepts",
        None,
    ),
    (
        "an ops alert for 200,000 customers",
        "/v1/ops/alerts",
        lambda: alert_with(customer_ids=[f"C{number:07d}" for number in range(200_000)]),
        None,
        422,
        "at most 10000",
        ["customer_ids"],
    ),
    (
        "a customer id of 3,000 characters",
        "/v1/devices",
        lambda: json.dumps({"customer_id": "C" * 3000, "device_id": "D1", "platform": "ios", "token": "t"}).encode(),
        None,
        422,
        "at most 256 characters",
        ["customer_id"],
    ),
    (
        "a NUL in a customer id",
        "/v1/preferences",
        lambda: json.dumps({"customer_id": "C\u00001", "push_opt_in": True}).encode(),
        None,
        422,
        "control characters",
        ["customer_id"],
    ),
    (
        "an alert dated where UTC has no such moment",
        "/v1/ops/alerts",
        lambda: alert_with(occurred_at="9999-12-31T23:59:59-23:59"),
        None,
        422,
        "exists in UTC",
        ["occurred_at"],
    ),
    (
        "a tracking event dated before year 1 in UTC",
        "/v1/exstream/events",
        lambda: json.dumps({"expctr": {"schemaType": "X-Failed", "eventDate": "0001-01-01T00:00:00+01:00"}}).encode(),
        None,
        422,
        "exists in UTC",
        [0, "expctr", "eventDate"],
    ),
    (
        "an engagement event dated where UTC has no such moment",
        "/v1/engagement-events",
        lambda: json.dumps(
            {
                "event_id": "e1",
                "type": "opened",
                "document_ref": "r",
                "customer_id": "C1",
                "occurred_at": "9999-12-31T23:59:59-23:59",
            }
        ).encode(),
        None,
        422,
        "exists in UTC",
        [0, "occurred_at"],
    ),
]


def reasons(response: httpx.Response) -> str:
    detail = response.json()["detail"]
    return detail if isinstance(detail, str) else " ".join(error["msg"] for error in detail)


def test_every_hostile_request_gets_a_4xx_naming_its_reason_and_changes_nothing(ingress: Ingress) -> None:
    before = ingress.counts()
    for case, route, body, header, expected, reason, field in HOSTILE:
        response = send(raw_request(ingress, route, body(), header() if header is not None else None))
        assert response.status_code == expected, (case, response.status_code, response.text[:300])
        assert reason in reasons(response), (case, response.text[:300])
        if field is not None:
            assert ["body", *field] in [error["loc"] for error in response.json()["detail"]], case
    assert ingress.counts() == before


def test_ids_up_to_256_characters_and_alerts_for_10000_customers_are_accepted(ingress: Ingress) -> None:
    long_id = "C" * 256
    device = {"customer_id": long_id, "device_id": "D" * 256, "platform": "ios", "token": "t"}
    assert ingress.post("/v1/devices", device).status_code == 200
    audience = [f"C{number:07d}" for number in range(10_000)]
    assert ingress.post("/v1/ops/alerts", outage_alert(customer_ids=audience)).status_code == 202
    with ingress.ledger.engine.connect() as conn:
        assert conn.scalar(select(Device.customer_id)) == long_id
        assert len(json.loads(conn.scalar(select(OpsAlert.audience)))["customer_ids"]) == 10_000


@pytest.fixture
def small_ingress(ingress_env: Path, prefect_down: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ingress]:
    monkeypatch.setenv("EXSTREAM_PUSH_INGRESS_MAX_BODY_BYTES", str(SMALL_LIMIT))
    settings = get_settings()
    with ServerThread(create_app(settings, prefect_api_url=prefect_down)) as server:
        yield Ingress(server.url, ledger_for(settings))


def answer_while_the_body_is_unsent(ingress: Ingress, path: str, headers: dict[str, str], sent: bytes) -> Any:
    """Send the head and ``sent`` of a body that never ends, then read: only a server that stops reading answers.

    A server that waited for the rest of the body (or buffered it) would never answer; the socket's timeout turns
    that into a failure.
    """
    url = httpx.URL(ingress.url)
    head = f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(head.encode() + sent)
        received = b""
        while chunk := sock.recv(65_536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)["detail"]


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_a_request_that_cannot_be_authenticated_is_refused_before_its_body_is_read(small_ingress: Ingress) -> None:
    """256 MB streamed unsigned used to be read in full before the 401: now the header alone decides."""
    shaped = sign(SECRET, fresh_timestamp(), b"")
    refused = {
        "missing": {},
        "not our format": {"X-Signature": "sha256=abc"},
        "stale": {"X-Signature": sign(SECRET, fresh_timestamp() - 310, b"")},
        "t= with 5,000 digits": {"X-Signature": f"t={'1' * 5000},v1={HEX}"},
    }
    for case, headers in refused.items():
        for framing in ({"Content-Length": str(256 * 1024 * 1024)}, {"Transfer-Encoding": "chunked"}):
            first = chunk(b" " * 1024) if "Transfer-Encoding" in framing else b" " * 1024
            status_code, detail = answer_while_the_body_is_unsent(
                small_ingress, "/v1/ops/alerts", {**headers, **framing}, first
            )
            assert status_code == 401, (case, framing)
            assert SIGNATURE_HEADER in detail or "timestamp" in detail, (case, detail)
    # A well-formed, timely header with a body declared over the limit: 413 before a byte of it arrives.
    status_code, detail = answer_while_the_body_is_unsent(
        small_ingress, "/v1/ops/alerts", {"X-Signature": shaped, "Content-Length": str(SMALL_LIMIT + 1)}, b""
    )
    assert (status_code, detail) == (
        413,
        f"the body is larger than {SMALL_LIMIT} bytes (EXSTREAM_PUSH_INGRESS_MAX_BODY_BYTES)",
    )
    assert small_ingress.counts()["SeenRequest"] == 0


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(small_ingress: Ingress) -> None:
    shaped = sign(SECRET, fresh_timestamp(), b"")
    over = chunk(b" " * (SMALL_LIMIT // 2)) * 2 + chunk(b" ")  # one byte past the limit, and the body goes on
    status_code, detail = answer_while_the_body_is_unsent(
        small_ingress, "/v1/exstream/events", {"X-Signature": shaped, "Transfer-Encoding": "chunked"}, over
    )
    assert status_code == 413 and str(SMALL_LIMIT) in detail
    assert small_ingress.counts()["SeenRequest"] == 0


def test_a_body_of_exactly_the_limit_is_read_and_one_byte_more_is_413(small_ingress: Ingress) -> None:
    preference = json.dumps({"customer_id": "C1", "push_opt_in": True}).encode()
    at_limit = preference + b" " * (SMALL_LIMIT - len(preference))

    def streamed(body: bytes) -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        yield from (body[start : start + 8192] for start in range(0, len(body), 8192))

    cases = [(at_limit, False, 200), (at_limit, True, 200), (at_limit + b" ", False, 413), (at_limit + b" ", True, 413)]
    now = fresh_timestamp()
    for age, (body, chunked, expected) in enumerate(cases):
        # Each signed for another second, so none is a replay of another.
        request = httpx.Request(
            "POST",
            f"{small_ingress.url}/v1/preferences",
            content=streamed(body) if chunked else body,
            headers={"X-Signature": sign(SECRET, now - age, body), "Content-Type": "application/json"},
        )
        response = send(request)
        assert response.status_code == expected, (len(body), chunked, response.text)
    assert small_ingress.counts()["SeenRequest"] == 2


def test_accepted_input_is_in_the_ledger_while_prefect_is_down_and_emitted_once_it_is_back(
    prefect_harness: None, ingress_env: Path, prefect_down: str, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    settings = get_settings()
    ledger = ledger_for(settings)
    ref = record_statement_document(ledger, "POL-1", "C0001")
    alert_id = f"OPS-{time.time_ns()}"
    samples = json.loads(SAMPLES.read_text())["events"]

    with ServerThread(create_app(settings, prefect_api_url=prefect_down)) as server:
        ingress = Ingress(server.url, ledger)
        device = {"customer_id": "C0001", "device_id": "dev-1", "platform": "android", "token": "tok-1"}
        device["categories"] = ["statements", "alerts", "alerts"]
        assert ingress.post("/v1/devices", device).json() == {
            "device_id": "dev-1",
            "active": True,
        }
        assert ingress.post("/v1/devices", {**device, "active": False}).status_code == 200
        assert ingress.post("/v1/preferences", {"customer_id": "C0001", "push_opt_in": True}).status_code == 200
        preference = ingress.post(
            "/v1/preferences", {"customer_id": "C0001", "preferred_channels": {"statements": "email"}}
        )
        assert preference.json() == {"customer_id": "C0001", "stated": ["preferred_channels"]}
        tracking = ingress.post("/v1/exstream/events", [*samples, FAILED_DELIVERY, NOT_DELIVERED])
        assert tracking.status_code == 202
        assert tracking.json() == {"stored": 4, "repeated": 0, "failed": 2}
        assert ingress.post("/v1/exstream/events", FAILED_DELIVERY).json() == {"stored": 0, "repeated": 1, "failed": 0}
        engagement = [
            {"event_id": "eng-1", "type": "acknowledged", "document_ref": ref, "customer_id": "C0001"},
            {"event_id": "eng-2", "type": "opened", "document_id": "POL-1", "customer_id": "C0001"},
            {"event_id": "eng-3", "type": "opened", "document_ref": "unknown-ref", "customer_id": "C0001"},
        ]
        occurred = {"occurred_at": "2026-11-02T09:00:00+01:00"}
        stored = ingress.post("/v1/engagement-events", [{**event, **occurred} for event in engagement])
        assert stored.json()["stored"] == 2
        assert [item["index"] for item in stored.json()["rejected"]] == [2]
        assert ingress.post("/v1/engagement-events", {**engagement[0], **occurred}).json()["repeated"] == 1
        alert = ingress.post("/v1/ops/alerts", outage_alert(alert_id, customer_ids=["C0002", "C0001", "C0002"]))
        assert alert.status_code == 202 and alert.json() == {"alert_id": alert_id, "duplicate": False}
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "outbox_pending": 6}

    # Everything acknowledged is in the ledger, although no event could reach Prefect.
    with ledger.engine.connect() as conn:
        device_row = conn.execute(select(Device.__table__).where(Device.device_id == "dev-1")).mappings().one()
        assert (device_row["active"], device_row["deactivated_reason"]) == (False, "unregistered")
        assert device_row["categories"] == "alerts;statements"
        preference_row = conn.execute(select(Preference.__table__)).mappings().one()
        assert preference_row["push_opt_in"] is True  # kept when only the channels were stated afterwards
        assert json.loads(preference_row["preferred_channels"]) == {"statements": "email"}
        tracked = {row.event_id: row for row in conn.execute(select(TrackingEvent.__table__))}
        assert json.loads(tracked["trk-failed-1"].payload) == FAILED_DELIVERY  # stored whole, user{} included
        assert tracked["trk-failed-1"].processed_at is None
        assert {row.schema_type for row in tracked.values()} == {
            "Exstream-Email-OPEN",
            "Exstream-FileOutputChannel",
            "Exstream-Email-Failed",
            "Exstream-Email-NDLV",
        }
        assert set(conn.scalars(select(EngagementEvent.event_id))) == {"eng-1", "eng-2"}
        stored_alert = conn.execute(select(OpsAlert.__table__)).mappings().one()
        assert json.loads(stored_alert["audience"]) == {"customer_ids": ["C0001", "C0002"]}
        assert stored_alert["state"] == "received"
    assert pending_count(ledger) == 6

    # Prefect is back: the outbox drains, and the events carry ids, never the customer's data.
    assert drain_outbox(ledger, PREFECT_API_URL.value()) == 6
    assert pending_count(ledger) == 0
    with ledger.engine.connect() as conn:
        outbox = {
            row.id: (row.event, row.resource_id, json.loads(row.payload))
            for row in conn.execute(select(OutboxEvent.__table__))
        }
    in_prefect = wait_for_events(list(outbox))
    assert {str(event.id): (event.event, event.resource.id, event.payload) for event in in_prefect} == outbox
    customer = customer_ref(settings.link_key, "C0001")
    assert sorted(outbox.values(), key=lambda item: json.dumps(item, sort_keys=True)) == [
        (
            "exstream-push.engagement.acknowledged",
            f"exstream-push.document.{ref}",
            {"document_ref": ref, "event_id": "eng-1", "type": "acknowledged", "use_case": "policy-change"},
        ),
        (
            "exstream-push.ops.alert",
            f"exstream-push.alert.{alert_id}",
            {"alert_id": alert_id, "kind": "outage", "severity": "critical"},
        ),
        (
            "exstream-push.preference.updated",
            f"exstream-push.customer.{customer}",
            {"customer_ref": customer, "fields": ["preferred_channels"]},
        ),
        (
            "exstream-push.preference.updated",
            f"exstream-push.customer.{customer}",
            {"customer_ref": customer, "fields": ["push_opt_in"]},
        ),
        (
            "exstream.delivery.failed",
            "exstream.tracking-event.trk-failed-1",
            {
                "communication_id": "comm-77",
                "schema_type": "Exstream-Email-Failed",
                "tracking_event_id": "trk-failed-1",
            },
        ),
        (
            "exstream.delivery.failed",
            "exstream.tracking-event.trk-ndlv-1",
            {"schema_type": "Exstream-Email-NDLV", "tracking_event_id": "trk-ndlv-1"},
        ),
    ]
    # As Prefect holds them: resource, related resources and payload, with no customer or document id anywhere.
    everything_emitted = json.dumps(list(outbox.values())) + "".join(event.model_dump_json() for event in in_prefect)
    for personal in ("example.com", "Doe", "John", "Smith", "tok-1", "C0001", "C0002", "POL-1"):
        assert personal not in everything_emitted


def test_no_event_the_ingress_emits_names_a_customer_or_a_document(ingress_env: Path) -> None:
    """Resource, related resources and payload of every kind of event carry opaque references only."""
    settings = get_settings()
    ledger = ledger_for(settings)
    ref = record_statement_document(ledger, "POL-SECRET-77", "CUST-SECRET-1")
    fake = FakePrefectEvents()
    with (
        ServerThread(fake.app) as prefect,
        ServerThread(create_app(settings, prefect_api_url=prefect.url + "/api")) as server,
    ):
        ingress = Ingress(server.url, ledger)
        for number, customer in enumerate(("CUST-SECRET-1", "CUST-SECRET-1", "CUST-SECRET-2")):
            stated = {"customer_id": customer, "push_opt_in": number != 1}  # three different bodies
            assert ingress.post("/v1/preferences", stated).status_code == 200
        acknowledged = {
            "event_id": "eng-ack-1",
            "type": "acknowledged",
            "document_id": "POL-SECRET-77",
            "customer_id": "CUST-SECRET-1",
            "occurred_at": "2026-11-02T09:00:00+00:00",
        }
        assert ingress.post("/v1/engagement-events", acknowledged).json()["stored"] == 1
        assert ingress.post("/v1/exstream/events", FAILED_DELIVERY).status_code == 202
        alert = outage_alert("OPS-77", customer_ids=["CUST-SECRET-1", "CUST-SECRET-2"])
        assert ingress.post("/v1/ops/alerts", alert).status_code == 202
        drain_outbox(ledger, prefect.url + "/api")
    emitted = [event for _, events in fake.requests for event in events]
    assert sorted(event["event"] for event in emitted) == [
        "exstream-push.engagement.acknowledged",
        "exstream-push.ops.alert",
        "exstream-push.preference.updated",
        "exstream-push.preference.updated",
        "exstream-push.preference.updated",
        "exstream.delivery.failed",
    ]
    everything = json.dumps(emitted)
    for personal in ("CUST-SECRET", "POL-SECRET", "C0001", "jane.doe", "Doe"):
        assert personal not in everything, personal
    preferences = [event for event in emitted if event["event"] == "exstream-push.preference.updated"]
    first, again, other = (event["resource"]["prefect.resource.id"] for event in preferences)
    assert first == again != other  # one stable reference per customer, another for another customer
    assert first == f"exstream-push.customer.{customer_ref(settings.link_key, 'CUST-SECRET-1')}"
    (engagement,) = [event for event in emitted if event["event"] == "exstream-push.engagement.acknowledged"]
    assert engagement["resource"]["prefect.resource.id"] == f"exstream-push.document.{ref}"
    assert engagement["payload"]["document_ref"] == ref


def test_the_ingress_will_not_start_without_its_secret(
    ingress_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("EXSTREAM_PUSH_INGRESS_SECRET")
    with pytest.raises(IngressConfigurationError, match="EXSTREAM_PUSH_INGRESS_SECRET"):
        create_app(get_settings())
    with pytest.raises(SystemExit, match="EXSTREAM_PUSH_INGRESS_SECRET is not set"):
        serve("127.0.0.1", free_port())

    monkeypatch.setenv("EXSTREAM_PUSH_INGRESS_SECRET", "")
    with pytest.raises(IngressConfigurationError):
        create_app(get_settings())


def test_health_and_docs_need_no_signature(ingress: Ingress) -> None:
    assert httpx.get(f"{ingress.url}/healthz").json() == {"status": "ok", "outbox_pending": 0}
    assert httpx.get(f"{ingress.url}/docs").status_code == 200
    spec = httpx.get(f"{ingress.url}/openapi.json").json()
    assert {"/v1/devices", "/v1/preferences", "/v1/engagement-events", "/v1/exstream/events", "/v1/ops/alerts"} <= set(
        spec["paths"]
    )
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-Signature"


ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_load_nothing_from_another_host(ingress: Ingress, page: str) -> None:
    """A bank's network reaches no CDN: the page names only this server's own assets, and they are served."""
    html = httpx.get(f"{ingress.url}{page}").text
    assert "://" not in html, html  # no absolute URL at all: not a CDN, not Google Fonts, not swagger.io's validator
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {Path(asset).suffix for asset in assets} >= {".js"}, html
    for asset in assets:
        assert asset.startswith("/"), asset
        answer = httpx.get(f"{ingress.url}{asset}")
        assert answer.status_code == 200, asset
        assert ASSET_TYPES[Path(asset).suffix] in answer.headers["content-type"], asset
        assert len(answer.content) > 1000, asset  # the real bundle, not an empty placeholder
    if page == "/docs":
        assert '"validatorUrl": null' in html


def test_the_running_service_drains_what_an_earlier_process_left_and_forgets_old_signatures(
    ingress_env: Path,
) -> None:
    """Started with events left in the outbox (Prefect was down, the process restarted), it emits them unasked."""
    settings = get_settings()
    ledger = ledger_for(settings)
    with ledger.engine.begin() as conn:
        left_behind = enqueue(conn, "exstream-push.ops.alert", "exstream-push.alert.OLD", {"alert_id": "OLD"})
        conn.execute(
            SeenRequest.__table__.insert(),
            [
                {"signature": "old", "seen_at": datetime.now(UTC) - timedelta(minutes=11)},
                {"signature": "recent", "seen_at": datetime.now(UTC) - timedelta(minutes=9)},
            ],
        )
    fake = FakePrefectEvents()
    with ServerThread(fake.app) as prefect:
        app = create_app(settings, prefect_api_url=f"{prefect.url}/api", drain_interval=0.05)
        config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="on", log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while pending_count(ledger) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    assert [event["id"] for _, events in fake.requests for event in events] == [left_behind]
    with ledger.engine.connect() as conn:
        assert set(conn.scalars(select(SeenRequest.signature))) == {"recent"}
