"""The Exstream client against the emulator on loopback: auth, paging, streaming and errors as Exstream has them."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette

from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.connectors.exstream import ExstreamClient, ExstreamError
from exstream_push.settings import BatchInputChannels, Settings
from exstream_push_dev.emulators.exstream import ExstreamEmulator, create_exstream_app, docgen_step_id, job_uuid
from exstream_push_dev.emulators.server import ServerThread

FIXTURES = Path(__file__).parent / "fixtures" / "exstream"
FIXTURE_FOLDER = FIXTURES / "jobs" / "JOB-FIXTURE-1"
FIXTURE_JOB = job_uuid(FIXTURE_FOLDER.name)
MISSING_JOB = job_uuid("NO-SUCH-JOB")
FIXTURE_MANIFEST = FIXTURE_FOLDER / "_STDDELIVERYFILE.xml"
SECRET = "client-s3cret"


class CountingTransport(httpx.HTTPTransport):
    """A real transport that also notes each request line, to see paging without mocking anything."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


@pytest.fixture
def app() -> Starlette:
    return create_exstream_app(FIXTURES, client_id="push", client_secret=SECRET)


@pytest.fixture
def emulator(app: Starlette) -> ExstreamEmulator:
    return app.state.exstream


@pytest.fixture
def server(app: Starlette) -> Iterator[ServerThread]:
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def transport() -> CountingTransport:
    return CountingTransport()


@pytest.fixture
def client(server: ServerThread, transport: CountingTransport) -> Iterator[ExstreamClient]:
    with ExstreamClient(
        f"{server.url}/orchestration",
        "default",
        otds_url=f"{server.url}/otdsws",
        client_id="push",
        client_secret=SECRET,
        transport=transport,
    ) as exstream:
        yield exstream


def token_requests(emulator: ExstreamEmulator) -> int:
    return sum(entry["path"] == "/otdsws/oauth2/token" for entry in emulator.inbox)


def test_token_is_fetched_once_and_reused(client: ExstreamClient, emulator: ExstreamEmulator) -> None:
    assert token_requests(emulator) == 0
    client.get_job(FIXTURE_JOB)
    client.list_jobs()
    client.flow_steps(FIXTURE_JOB)
    assert token_requests(emulator) == 1


def test_a_short_lived_token_is_renewed_before_it_expires(client: ExstreamClient, emulator: ExstreamEmulator) -> None:
    emulator.token_ttl = 2
    started = time.monotonic()
    while time.monotonic() - started < 5:
        assert client.get_job(FIXTURE_JOB).id == FIXTURE_JOB
        time.sleep(0.25)
    assert token_requests(emulator) >= 3
    assert emulator.auth_failures == Counter()


def test_a_401_for_an_expired_token_renews_it_once_and_retries(
    client: ExstreamClient, emulator: ExstreamEmulator
) -> None:
    client.get_job(FIXTURE_JOB)
    emulator.expire_tokens()  # the server's clock is ahead of ours: the token is dead before we think it is
    assert client.get_job(FIXTURE_JOB).id == FIXTURE_JOB
    assert emulator.auth_failures == Counter({"expired": 1})
    assert token_requests(emulator) == 2


def test_a_401_fetches_a_new_token_once(client: ExstreamClient, emulator: ExstreamEmulator) -> None:
    client.get_job(FIXTURE_JOB)
    emulator.revoke_tokens()
    assert client.get_job(FIXTURE_JOB).id == FIXTURE_JOB
    assert token_requests(emulator) == 2


def test_wrong_credentials_name_the_failure_not_the_secret(server: ServerThread) -> None:
    wrong = "not-the-secret"
    with (
        ExstreamClient(
            f"{server.url}/orchestration",
            "default",
            otds_url=f"{server.url}/otdsws",
            client_id="push",
            client_secret=wrong,
        ) as exstream,
        pytest.raises(ExstreamError) as caught,
    ):
        exstream.list_jobs()
    error = caught.value
    assert (error.method, error.path, error.status_code) == ("POST", "/otdsws/oauth2/token", 401)
    assert "invalid_client" in str(error)
    assert wrong not in str(error) and wrong not in repr(exstream)


def test_list_jobs_filters_by_mode_and_status(client: ExstreamClient, emulator: ExstreamEmulator) -> None:
    emulator.put_job({"id": job_uuid("J-ERR"), "status": "error"})
    emulator.put_job({"id": job_uuid("J-RUN"), "status": "started"})
    emulator.put_job({"id": job_uuid("J-OD"), "status": "complete", "mode": "ONDEMAND"})

    err, run, ondemand = (job_uuid(name) for name in ("J-ERR", "J-RUN", "J-OD"))
    assert {j.id for j in client.list_jobs(statuses=["complete", "error"])} == {FIXTURE_JOB, err}
    assert {j.id for j in client.list_jobs(mode=None, statuses=["complete"])} == {FIXTURE_JOB, ondemand}
    assert {j.id for j in client.list_jobs()} == {FIXTURE_JOB, err, run}
    [job] = client.list_jobs(channel="MonthlyStatements")
    assert job.status == "complete" and job.mode == "BATCH" and job.external_id == "stmt-2024-04"
    assert job.end_date is not None and job.end_date.isoformat() == "2024-04-15T02:00:06+00:00"
    with pytest.raises(ValueError, match="cannot contain"):
        client.list_jobs(channel="a;b")


def test_list_jobs_follows_every_page(
    client: ExstreamClient, emulator: ExstreamEmulator, transport: CountingTransport
) -> None:
    for n in range(6):
        emulator.put_job({"id": job_uuid(f"J-{n}"), "startDate": f"2024-05-0{n + 1}T00:00:00Z"})
    client.PAGE_SIZE = 3
    jobs = client.list_jobs()
    assert [job.id for job in jobs] == [FIXTURE_JOB] + [job_uuid(f"J-{n}") for n in range(6)]
    offsets = [r.url.params["offset"] for r in transport.requests if r.url.path.endswith("/jobs")]
    assert offsets == ["0", "3", "6"]


def test_flow_steps_and_streamed_downloads(client: ExstreamClient, tmp_path: Path) -> None:
    steps = client.flow_steps(FIXTURE_JOB)
    assert len(steps) == 2
    [docgen] = [step for step in steps if step.delivery_file_retrievable]
    assert docgen.id == docgen_step_id(FIXTURE_JOB)
    assert docgen.message_file_retrievable and docgen.step_type == "communication"
    assert client.get_flow_step(docgen.id) == docgen

    manifest = client.download_delivery_file(docgen.id, tmp_path / "out" / "manifest.xml")
    assert manifest.read_bytes() == FIXTURE_MANIFEST.read_bytes()
    messages = client.download_message_file(docgen.id, tmp_path / "messages.dat")
    assert messages.read_bytes() == (FIXTURE_FOLDER / "ExstreamMessages.dat").read_bytes()
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["manifest.xml", "messages.dat"]


def test_not_found_is_a_clear_error(client: ExstreamClient, tmp_path: Path) -> None:
    with pytest.raises(ExstreamError) as caught:
        client.get_job(MISSING_JOB)
    assert caught.value.status_code == 404
    assert str(caught.value) == (
        f"Exstream GET /orchestration/api/v1/runtime/default/jobs/{MISSING_JOB} failed: "
        f"HTTP 404: Not Found: Job {MISSING_JOB} not found in domain default"
    )
    [input_step] = [step for step in client.flow_steps(FIXTURE_JOB) if not step.delivery_file_retrievable]
    with pytest.raises(ExstreamError, match="has no delivery file"):
        client.download_delivery_file(input_step.id, tmp_path / "manifest.xml")
    assert list(tmp_path.iterdir()) == []
    assert client.flow_steps(MISSING_JOB) == []


def test_batch_input_is_posted_and_recorded_redacted(client: ExstreamClient, emulator: ExstreamEmulator) -> None:
    body = b"CustomerId,DocumentId,Status\nC0001,DOC-1,delivered\n"
    [started] = client.post_batch_input("push-status", body, headers={"exstream-variable-runId": "r-7"})
    assert started["status"] == "started"
    assert client.get_job(started["jobId"]).status == "started"

    [recorded] = [e for e in emulator.inbox if e["path"] == "/orchestration/api/v1/inputs/batch/default/push-status"]
    assert recorded["body"] == body.decode()
    assert recorded["headers"]["content-type"] == "text/csv"
    assert recorded["headers"]["exstream-variable-runid"] == "r-7"
    assert recorded["headers"]["authorization"] == "Bearer [redacted]"
    assert SECRET not in json.dumps(emulator.inbox)


def test_a_file_body_is_streamed_and_resent_after_a_401(
    client: ExstreamClient, emulator: ExstreamEmulator, tmp_path: Path
) -> None:
    csv = tmp_path / "statuses.csv"
    csv.write_text("CustomerId,Status\n" + "".join(f"C{n:05d},delivered\n" for n in range(20_000)))
    client.list_jobs()
    emulator.revoke_tokens()
    emulator.clear_inbox()
    [started] = client.post_batch_input("push-status", csv)
    batch_posts = [e for e in emulator.inbox if e["path"].endswith("/push-status")]
    assert len(batch_posts) == 2
    assert batch_posts[-1]["body"] == csv.read_text()
    assert batch_posts[-1]["headers"]["content-length"] == str(csv.stat().st_size)
    assert client.get_job(started["jobId"]).channel == "push-status"


def test_reprocess_job(client: ExstreamClient, emulator: ExstreamEmulator) -> None:
    assert client.reprocess_job(FIXTURE_JOB) == {"data": FIXTURE_JOB}
    assert client.get_job(FIXTURE_JOB).status == "started"
    assert emulator.inbox[-1]["path"].endswith(f"/jobs/{FIXTURE_JOB}/reprocessing")
    with pytest.raises(ExstreamError) as caught:
        client.reprocess_job(MISSING_JOB)
    assert (caught.value.method, caught.value.status_code) == ("POST", 404)


def test_a_job_completed_at_run_time_is_found_and_fetched(
    client: ExstreamClient, server: ServerThread, tmp_path: Path
) -> None:
    [started] = client.post_batch_input("push-status", b"CustomerId\nC42\n")
    job_id = started["jobId"]
    assert job_id not in {job.id for job in client.list_jobs(statuses=["complete"])}

    manifest = '<outputList customersProcessed="1"><customer><key name="CustomerId">C42</key></customer></outputList>'
    httpx.post(f"{server.url}/_emulator/jobs", json={"id": job_id, "status": "complete", "deliveryFile": manifest})

    assert job_id in {job.id for job in client.list_jobs(statuses=["complete"])}
    [docgen] = [step for step in client.flow_steps(job_id) if step.delivery_file_retrievable]
    assert client.download_delivery_file(docgen.id, tmp_path / "m.xml").read_text() == manifest


def test_unreachable_server_is_an_exstream_error() -> None:
    with (
        ExstreamClient(
            "http://127.0.0.1:9/orchestration",
            "default",
            otds_url="http://127.0.0.1:9/otdsws",
            client_id="a",
            client_secret="b",
        ) as exstream,
        pytest.raises(ExstreamError, match="ConnectError"),
    ):
        exstream.list_jobs()


def settings_for(server: ServerThread) -> Settings:
    return Settings(
        exstream_url=f"{server.url}/orchestration",
        otds_client_id="push",
        otds_client_secret=SecretStr(SECRET),
        channels=BatchInputChannels(push_status="statuses"),
    )


def test_client_from_settings_derives_the_otds_url(server: ServerThread) -> None:
    with ExstreamConnection.from_settings(settings_for(server)).get_client() as exstream:
        assert exstream.otds_url == f"{server.url}/otdsws"
        assert exstream.get_job(FIXTURE_JOB).status == "complete"


def test_connection_block_round_trips_through_prefect(prefect_harness: None, server: ServerThread) -> None:
    block = ExstreamConnection.from_settings(settings_for(server))
    assert block.status_channel == "statuses"
    block.save("test-exstream", overwrite=True)
    loaded = ExstreamConnection.load("test-exstream")
    assert loaded.client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(loaded)
    with loaded.get_client() as exstream:
        assert exstream.get_job(FIXTURE_JOB).id == FIXTURE_JOB


def capped_client(server: ServerThread, transport: httpx.BaseTransport | None = None) -> ExstreamClient:
    return ExstreamClient(
        f"{server.url}/orchestration",
        "default",
        otds_url=f"{server.url}/otdsws",
        client_id="push",
        client_secret=SECRET,
        transport=transport,
    )


def test_a_server_capping_pages_at_50_yields_every_one_of_1000_jobs(transport: CountingTransport) -> None:
    app = create_exstream_app(None, client_id="push", client_secret=SECRET, page_cap=50)
    emulator: ExstreamEmulator = app.state.exstream
    expected = [job_uuid(f"J-{n:04d}") for n in range(1000)]
    for n, job_id in enumerate(expected):
        emulator.put_job({"id": job_id, "startDate": f"2024-05-01T00:{n // 60:02d}:{n % 60:02d}Z"})
    with ServerThread(app) as server, capped_client(server, transport) as exstream:
        assert exstream.PAGE_SIZE > 50
        assert [job.id for job in exstream.list_jobs()] == expected
    offsets = [int(r.url.params["offset"]) for r in transport.requests if r.url.path.endswith("/jobs")]
    assert offsets == list(range(0, 1000, 50))


def paging_by_page_number(request: httpx.Request) -> httpx.Response:
    """An Exstream that reads ``offset`` as a page number and serves 10 per page: not the emulator's reading."""
    if request.url.path.endswith("/oauth2/token"):
        return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 3600})
    jobs = [{"id": job_uuid(f"P-{n}"), "status": "complete"} for n in range(25)]
    size, page_number = 10, int(request.url.params["offset"])
    served = jobs[page_number * size : (page_number + 1) * size]
    page = {"pageSize": size, "pageOffset": page_number, "totalElements": 25, "totalPages": 3}
    return httpx.Response(200, json={"status": "success", "data": served, "page": page})


def client_answered_by(handler: Callable[[httpx.Request], httpx.Response]) -> ExstreamClient:
    """A client whose every request, token included, is answered by ``handler``: a server shaped as no emulator is."""
    return ExstreamClient(
        "http://exstream.test/orchestration",
        "default",
        otds_url="http://exstream.test/otdsws",
        client_id="push",
        client_secret=SECRET,
        transport=httpx.MockTransport(handler),
    )


def test_an_empty_page_before_total_elements_is_an_error_not_a_short_list() -> None:
    with (
        client_answered_by(paging_by_page_number) as exstream,
        pytest.raises(ExstreamError) as caught,
    ):
        exstream.list_jobs()
    assert caught.value.path == "/orchestration/api/v1/runtime/default/jobs"
    assert "page at offset 10 is empty although totalElements is 25" in str(caught.value)


@pytest.mark.parametrize("shape", ["generic", "spring"])
def test_both_error_shapes_are_reported_as_status_and_message(shape: str, tmp_path: Path) -> None:
    app = create_exstream_app(FIXTURES, client_id="push", client_secret=SECRET, error_shape=shape)
    emulator: ExstreamEmulator = app.state.exstream
    step = docgen_step_id(FIXTURE_JOB)
    emulator.file_faults[step] = [500]
    with ServerThread(app) as server, capped_client(server) as exstream:
        with pytest.raises(ExstreamError) as missing:
            exstream.get_job(MISSING_JOB)
        with pytest.raises(ExstreamError) as failed:
            exstream.download_delivery_file(step, tmp_path / "m.xml")
    assert str(missing.value).endswith(f"HTTP 404: Not Found: Job {MISSING_JOB} not found in domain default")
    assert str(failed.value).endswith(f"HTTP 500: Internal Server Error: emulated fault on flow step {step}")
    assert failed.value.exit_code == 69
    for error in (missing.value, failed.value):
        assert "timestamp" not in str(error) and "uri=" not in str(error) and "{" not in str(error)


def test_a_spring_body_without_a_message_falls_back_to_the_reason() -> None:
    def blank_message(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 3600})
        body = {"timestamp": "2026-12-01T00:00:00Z", "status": 503, "error": "Service Unavailable", "message": ""}
        return httpx.Response(503, json={**body, "path": request.url.path})

    with (
        client_answered_by(blank_message) as exstream,
        pytest.raises(ExstreamError) as caught,
    ):
        exstream.get_job(FIXTURE_JOB)
    assert str(caught.value).endswith("failed: HTTP 503: Service Unavailable")


def test_batch_input_to_a_wrong_domain_channel_or_content_type_is_a_clear_error(
    client: ExstreamClient, server: ServerThread, emulator: ExstreamEmulator
) -> None:
    with pytest.raises(ExstreamError) as channel:
        client.post_batch_input("no-such-channel", b"a,b\n")
    with pytest.raises(ExstreamError) as content_type:
        client.post_batch_input("push-status", b"<x/>", content_type="application/xml")
    with capped_client(server) as elsewhere:
        elsewhere.domain = "other"
        with pytest.raises(ExstreamError) as domain:
            elsewhere.post_batch_input("push-status", b"a,b\n")
    assert (channel.value.status_code, content_type.value.status_code, domain.value.status_code) == (404, 415, 404)
    assert "Input channel no-such-channel not found in domain default" in str(channel.value)
    assert "takes text/csv, not application/xml" in str(content_type.value)
    assert "Domain other not found" in str(domain.value)
    assert {job.channel for job in client.list_jobs(statuses=["started"])} == set()
