"""The Exstream emulator must answer like the orchestration API, so what passes here holds there."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from exstream_push_dev.emulators.exstream import (
    ExstreamEmulator,
    create_exstream_app,
    docgen_step_id,
    flow_instance_id,
    input_step_id,
    job_uuid,
)
from exstream_push_dev.emulators.server import ServerThread

FIXTURES = Path(__file__).parent / "fixtures" / "exstream"
FIXTURE_FOLDER = FIXTURES / "jobs" / "JOB-FIXTURE-1"
FIXTURE_JOB = job_uuid(FIXTURE_FOLDER.name)
MISSING_JOB = job_uuid("NO-SUCH-JOB")
RUNTIME = "/orchestration/api/v1/runtime/default"
TOKEN = "/otdsws/oauth2/token"
CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def app() -> Starlette:
    return create_exstream_app(FIXTURES)


@pytest.fixture
def server(app: Starlette) -> Iterator[ServerThread]:
    with ServerThread(app) as running:
        yield running


@pytest.fixture
def emulator(app: Starlette) -> ExstreamEmulator:
    return app.state.exstream


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as client:
        yield client


def token_for(http: httpx.Client, client_id: str = "push", secret: str = "s3cret") -> str:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    response = http.post(TOKEN, data=form)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] > 0
    return body["access_token"]


@pytest.fixture
def api(http: httpx.Client) -> httpx.Client:
    http.headers["Authorization"] = f"Bearer {token_for(http)}"
    return http


def data(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def job_ids(response: httpx.Response) -> set[str]:
    return {job["id"] for job in data(response)}


def test_api_needs_a_token_from_otds(http: httpx.Client) -> None:
    unauthenticated = http.get(f"{RUNTIME}/jobs")
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["status"] == "failure"
    assert http.get(f"{RUNTIME}/jobs", headers={"Authorization": "Bearer made-up"}).status_code == 401
    assert http.post(f"{RUNTIME}/jobs/{FIXTURE_JOB}/reprocessing").status_code == 401

    token = token_for(http)
    assert job_ids(http.get(f"{RUNTIME}/jobs", headers={"Authorization": f"Bearer {token}"})) == {FIXTURE_JOB}


def test_revoked_tokens_stop_working(api: httpx.Client, emulator: ExstreamEmulator) -> None:
    assert api.get(f"{RUNTIME}/jobs").status_code == 200
    emulator.revoke_tokens()
    assert api.get(f"{RUNTIME}/jobs").status_code == 401


def test_explicit_credentials_are_enforced_form_or_basic() -> None:
    app = create_exstream_app(None, client_id="push", client_secret="right")
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as http:
        wrong = http.post(TOKEN, data={"grant_type": "client_credentials", "client_id": "push", "client_secret": "x"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "invalid_client"
        basic = base64.b64encode(b"push:right").decode()
        ok = http.post(TOKEN, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"})
        assert ok.status_code == 200
        assert token_for(http, "push", "right")
        password_grant = http.post(TOKEN, data={"grant_type": "password", "client_id": "push"})
        assert password_grant.status_code == 400


def test_fixture_job_is_served_with_its_job_json_fields(api: httpx.Client) -> None:
    job = data(api.get(f"{RUNTIME}/jobs/{FIXTURE_JOB}"))
    assert job["status"] == "complete"
    assert job["mode"] == "BATCH"
    assert job["channel"] == "MonthlyStatements"
    assert job["domainId"] == "default"
    assert job["endDate"] == "2024-04-15T02:00:06Z"


def test_jobs_filter_uses_the_api_syntax(api: httpx.Client, emulator: ExstreamEmulator) -> None:
    emulator.put_job({"id": job_uuid("J-ERR"), "status": "error", "channel": "Letters"})
    emulator.put_job({"id": job_uuid("J-RUNNING"), "status": "started"})
    emulator.put_job({"id": job_uuid("J-ONDEMAND"), "status": "complete", "mode": "ONDEMAND"})
    emulator.put_job({"id": job_uuid("J-GONE"), "status": "deleted"})

    def ids(filter_value: str, **params: str) -> set[str]:
        return job_ids(api.get(f"{RUNTIME}/jobs", params={"filter": filter_value, **params}))

    err, running, ondemand, gone = (job_uuid(name) for name in ("J-ERR", "J-RUNNING", "J-ONDEMAND", "J-GONE"))
    assert ids("mode:BATCH;statuses:complete,error") == {FIXTURE_JOB, err}
    assert ids("statuses:complete") == {FIXTURE_JOB, ondemand}
    assert ids("channel:Letters") == {err}
    assert ids(f"ids:{running},{err}") == {running, err}
    assert ids("endDateStart:2024-04-15;endDateEnd:2024-04-15") == {FIXTURE_JOB}
    assert ids("", fetchDeleted="true") == {gone}
    assert gone not in ids("")

    typo = api.get(f"{RUNTIME}/jobs", params={"filter": "state:complete"})
    assert typo.status_code == 400
    assert "state:complete" in typo.json()["details"]


def test_jobs_are_paged_by_offset_and_count(api: httpx.Client, emulator: ExstreamEmulator) -> None:
    for n in range(4):
        emulator.put_job({"id": job_uuid(f"J-{n}"), "startDate": f"2024-05-0{n + 1}T00:00:00Z"})
    seen: list[str] = []
    for offset in (0, 2, 4):
        response = api.get(f"{RUNTIME}/jobs", params={"offset": offset, "count": 2})
        page = response.json()["page"]
        assert page["totalElements"] == 5
        assert page["totalPages"] == 3
        assert page["pageSize"] == 2
        assert page["pageOffset"] == offset
        seen += [job["id"] for job in data(response)]
    assert seen == [FIXTURE_JOB] + [job_uuid(f"J-{n}") for n in range(4)]
    assert api.get(f"{RUNTIME}/jobs", params={"count": 0}).status_code == 400


def test_steps_are_reached_through_the_jobs_flow_instance(api: httpx.Client) -> None:
    instances = data(api.get(f"{RUNTIME}/flow-instances", params={"filter": f"jobId:{FIXTURE_JOB}"}))
    assert [i["id"] for i in instances] == [flow_instance_id(FIXTURE_JOB)]
    assert instances[0]["jobId"] == FIXTURE_JOB

    steps = data(api.get(f"{RUNTIME}/flow-steps", params={"filter": f"flowInstanceId:{instances[0]['id']}"}))
    by_type = {step["stepType"]: step for step in steps}
    assert by_type["input"]["id"] == input_step_id(FIXTURE_JOB)
    assert by_type["input"]["deliveryFileRetrievable"] is False
    docgen = by_type["communication"]
    assert docgen["id"] == docgen_step_id(FIXTURE_JOB)
    assert docgen["deliveryFileRetrievable"] is True and docgen["messageFileRetrievable"] is True
    assert docgen["status"] == "complete"
    assert "jobId" not in docgen

    retrievable = data(api.get(f"{RUNTIME}/flow-steps", params={"filter": "deliveryFileRetrievable:true"}))
    assert [step["id"] for step in retrievable] == [docgen_step_id(FIXTURE_JOB)]
    assert data(api.get(f"{RUNTIME}/flow-steps/{docgen['id']}")) == docgen


def test_step_ids_are_stable_across_restarts() -> None:
    ids = []
    for _ in range(2):
        with (
            ServerThread(create_exstream_app(FIXTURES)) as running,
            httpx.Client(base_url=running.url) as http,
        ):
            headers = {"Authorization": f"Bearer {token_for(http)}"}
            ids.append([step["id"] for step in data(http.get(f"{RUNTIME}/flow-steps", headers=headers))])
    assert ids[0] == ids[1]


def test_delivery_and_message_files_are_the_files_on_disk(api: httpx.Client) -> None:
    step = docgen_step_id(FIXTURE_JOB)
    manifest = api.get(f"{RUNTIME}/flow-steps/{step}/delivery-file")
    assert manifest.status_code == 200
    assert manifest.content == (FIXTURE_FOLDER / "_STDDELIVERYFILE.xml").read_bytes()
    assert manifest.headers["content-type"].startswith("application/xml")
    assert "content-disposition" not in manifest.headers
    downloaded = api.get(f"{RUNTIME}/flow-steps/{step}/delivery-file", params={"download": "true"})
    assert "attachment" in downloaded.headers["content-disposition"]

    messages = api.get(f"{RUNTIME}/flow-steps/{step}/message-file")
    assert messages.content == (FIXTURE_FOLDER / "ExstreamMessages.dat").read_bytes()


def test_a_large_manifest_streams_intact(api: httpx.Client, emulator: ExstreamEmulator, tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "J-BIG"
    folder.mkdir(parents=True)
    customer = '<customer><key name="CustomerId">C{:07d}</key><queueName>PDF</queueName></customer>\n'
    with (folder / "_STDDELIVERYFILE.xml").open("w") as out:
        out.write("<outputList>\n")
        out.writelines(customer.format(n) for n in range(60_000))
        out.write("</outputList>\n")
    emulator.load_job_folder(folder)
    digest = hashlib.sha256()
    size = 0
    with api.stream("GET", f"{RUNTIME}/flow-steps/{docgen_step_id(job_uuid('J-BIG'))}/delivery-file") as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    expected = (folder / "_STDDELIVERYFILE.xml").read_bytes()
    assert size == len(expected) > 4_000_000
    assert digest.hexdigest() == hashlib.sha256(expected).hexdigest()


def test_missing_things_are_404_with_a_message(api: httpx.Client) -> None:
    job = api.get(f"{RUNTIME}/jobs/{MISSING_JOB}")
    assert job.status_code == 404
    assert job.json() == {
        "status": "failure",
        "message": "Not Found",
        "details": f"Job {MISSING_JOB} not found in domain default",
    }
    assert api.get("/orchestration/api/v1/runtime/other-domain/jobs/" + FIXTURE_JOB).status_code == 404
    input_step = api.get(f"{RUNTIME}/flow-steps/{input_step_id(FIXTURE_JOB)}/delivery-file")
    assert input_step.status_code == 404
    assert "no delivery file" in input_step.json()["details"]
    assert api.post(f"{RUNTIME}/jobs/{MISSING_JOB}/reprocessing").status_code == 404


def test_batch_input_starts_a_job_and_lands_in_the_inbox(api: httpx.Client) -> None:
    body = "CustomerId,DocumentId,Status\nC0001,DOC-1,delivered\n"
    response = api.post(
        "/orchestration/api/v1/inputs/batch/default/push-status",
        content=body,
        headers={"Content-Type": "text/csv", "exstream-variable-runId": "r-1"},
    )
    [started] = data(response)
    assert started["status"] == "started"
    assert started["id"] == flow_instance_id(started["jobId"])

    job = data(api.get(f"{RUNTIME}/jobs/{started['jobId']}"))
    assert job["status"] == "started" and job["channel"] == "push-status" and job["triggeredBy"] == "push"
    assert "endDate" not in job

    inbox = api.get("/_emulator/inbox").json()
    [recorded] = [entry for entry in inbox if entry["path"].endswith("/push-status")]
    assert recorded["method"] == "POST"
    assert recorded["body"] == body
    assert recorded["headers"]["content-type"] == "text/csv"
    assert recorded["headers"]["exstream-variable-runid"] == "r-1"
    assert recorded["headers"]["authorization"] == "Bearer [redacted]"

    assert api.delete("/_emulator/inbox").status_code == 204
    assert api.get("/_emulator/inbox").json() == []


def test_a_huge_body_is_kept_only_in_part(api: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("exstream_push_dev.emulators.exstream.INBOX_BODY_LIMIT", 10)
    api.post("/orchestration/api/v1/inputs/batch/default/push-status", content=b"0123456789abcdef", headers=CSV)
    [recorded] = [entry for entry in api.get("/_emulator/inbox").json() if entry["path"].endswith("/push-status")]
    assert recorded["body"] == "0123456789"
    assert recorded["truncated"] is True


def test_unknown_api_paths_still_need_a_token(http: httpx.Client) -> None:
    assert http.get("/orchestration/api/v1/runtime/default/nothing-here").status_code == 401
    token = token_for(http)
    missing = http.get(
        "/orchestration/api/v1/runtime/default/nothing-here", headers={"Authorization": f"Bearer {token}"}
    )
    assert missing.status_code == 404
    assert http.post("/orchestration/api/v1/wrong/path", content=b"x").status_code == 401
    assert [entry["path"] for entry in http.get("/_emulator/inbox").json()][-1] == "/orchestration/api/v1/wrong/path"


def test_the_inbox_never_holds_a_secret(http: httpx.Client) -> None:
    token = token_for(http, "push", "s3cret")
    basic = base64.b64encode(b"push:basic-s3cret").decode()
    http.post(TOKEN, data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {basic}"})
    http.post(f"{RUNTIME}/jobs/{FIXTURE_JOB}/reprocessing", headers={"Authorization": f"Bearer {token}"})

    inbox = http.get("/_emulator/inbox").json()
    assert [entry["path"] for entry in inbox] == [TOKEN, TOKEN, f"{RUNTIME}/jobs/{FIXTURE_JOB}/reprocessing"]
    assert inbox[0]["body"] == "grant_type=client_credentials&client_id=push&client_secret=[redacted]"
    dumped = json.dumps(inbox)
    for secret in ("s3cret", basic, token):
        assert secret not in dumped


def test_reprocessing_puts_the_job_back_to_started(api: httpx.Client) -> None:
    response = api.post(f"{RUNTIME}/jobs/{FIXTURE_JOB}/reprocessing", params={"useCurrentFlowModel": "true"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain") and response.text == FIXTURE_JOB
    assert data(api.get(f"{RUNTIME}/jobs/{FIXTURE_JOB}"))["status"] == "started"
    [recorded] = api.get("/_emulator/inbox").json()[1:]
    assert recorded["query"] == "useCurrentFlowModel=true"


def test_a_started_job_can_be_completed_at_run_time(api: httpx.Client) -> None:
    batch = api.post("/orchestration/api/v1/inputs/batch/default/push-status", content=b"x", headers=CSV)
    [started] = data(batch)
    job_id = started["jobId"]
    assert job_ids(api.get(f"{RUNTIME}/jobs", params={"filter": "statuses:complete"})) == {FIXTURE_JOB}

    manifest = '<outputList customersProcessed="1"><customer><key name="CustomerId">C9</key></customer></outputList>'
    added = api.post(
        "/_emulator/jobs",
        json={
            "id": job_id,
            "status": "complete",
            "deliveryFile": manifest,
            "messageFile": "INFO 0001: done\n",
        },
    )
    assert added.status_code == 201
    assert added.json()["data"]["status"] == "complete"

    job = data(api.get(f"{RUNTIME}/jobs/{job_id}"))
    assert job["status"] == "complete" and job["endDate"] and job["channel"] == "push-status"
    assert job_ids(api.get(f"{RUNTIME}/jobs", params={"filter": "statuses:complete"})) == {
        FIXTURE_JOB,
        job_id,
    }
    served = api.get(f"{RUNTIME}/flow-steps/{docgen_step_id(job_id)}/delivery-file")
    assert served.text == manifest
    assert api.get(f"{RUNTIME}/flow-steps/{docgen_step_id(job_id)}/message-file").text == "INFO 0001: done\n"


def test_a_job_folder_can_be_added_at_run_time(api: httpx.Client, tmp_path: Path) -> None:
    folder = tmp_path / "J-FOLDER"
    folder.mkdir()
    (folder / "_STDDELIVERYFILE.xml").write_text("<outputList/>")
    response = api.post("/_emulator/jobs", json={"path": str(folder), "status": "error", "msg": "engine rc 12"})
    assert response.status_code == 201
    job = data(api.get(f"{RUNTIME}/jobs/{job_uuid('J-FOLDER')}"))
    assert job["status"] == "error" and job["msg"] == "engine rc 12"
    steps = data(api.get(f"{RUNTIME}/flow-steps", params={"filter": f"ids:{docgen_step_id(job_uuid('J-FOLDER'))}"}))
    assert steps[0]["deliveryFileRetrievable"] is True and steps[0]["messageFileRetrievable"] is False


def test_bad_run_time_jobs_are_refused(api: httpx.Client) -> None:
    new = job_uuid("J")
    assert api.post("/_emulator/jobs", json={"id": new, "stauts": "complete"}).status_code == 400
    assert api.post("/_emulator/jobs", json={"id": new, "status": "finished"}).status_code == 400
    assert api.post("/_emulator/jobs", json={"path": "/no/such/folder"}).status_code == 400
    not_a_uuid = api.post("/_emulator/jobs", json={"id": "J", "status": "complete"})
    assert not_a_uuid.status_code == 400 and new in not_a_uuid.json()["details"]
    assert api.get(f"{RUNTIME}/jobs/{new}").status_code == 404


def test_seed_files_are_not_written_by_run_time_changes(api: httpx.Client) -> None:
    before = {p: p.read_bytes() for p in FIXTURE_FOLDER.iterdir()}
    api.post("/_emulator/jobs", json={"id": FIXTURE_JOB, "deliveryFile": "<outputList/>"})
    assert api.get(f"{RUNTIME}/flow-steps/{docgen_step_id(FIXTURE_JOB)}/delivery-file").text == "<outputList/>"
    assert {p: p.read_bytes() for p in FIXTURE_FOLDER.iterdir()} == before


def test_a_list_page_serves_at_most_the_cap_and_says_so(emulator: ExstreamEmulator, api: httpx.Client) -> None:
    emulator.page_cap = 3
    for n in range(6):
        emulator.put_job({"id": job_uuid(f"J-{n}"), "startDate": f"2024-05-0{n + 1}T00:00:00Z"})
    response = api.get(f"{RUNTIME}/jobs", params={"offset": 3, "count": 100})
    assert len(data(response)) == 3
    assert response.json()["page"] == {
        "pageSize": 3,
        "pageOffset": 3,
        "totalElements": 7,
        "totalPages": 3,
        "currentPageNumber": 1,
    }
    small = api.get(f"{RUNTIME}/flow-steps", params={"count": 2}).json()
    assert len(small["data"]) == 2 and small["page"]["pageSize"] == 2 and small["page"]["totalPages"] == 7
    assert len(data(api.get(f"{RUNTIME}/flow-instances", params={"count": 50}))) == 3


def test_the_default_page_cap_is_50() -> None:
    app = create_exstream_app(None)
    for n in range(60):
        app.state.exstream.put_job({"id": job_uuid(f"J-{n}")})
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as other:
        other.headers["Authorization"] = f"Bearer {token_for(other)}"
        page = other.get(f"{RUNTIME}/jobs", params={"count": 1000}).json()
    assert len(page["data"]) == 50 and page["page"]["pageSize"] == 50 and page["page"]["totalElements"] == 60


def test_every_id_served_is_a_uuid(api: httpx.Client) -> None:
    batch = api.post("/orchestration/api/v1/inputs/batch/default/push-status", content=b"a\n", headers=CSV)
    [started] = data(batch)
    jobs = data(api.get(f"{RUNTIME}/jobs"))
    steps = data(api.get(f"{RUNTIME}/flow-steps"))
    ids = [started["id"], started["jobId"], *(job["id"] for job in jobs), *(step["id"] for step in steps)]
    assert FIXTURE_JOB in ids and len(ids) == 2 + 2 + 4
    for value in ids:
        assert str(uuid.UUID(value)) == value


def test_an_expired_token_is_refused_with_an_invalid_token_challenge() -> None:
    app = create_exstream_app(FIXTURES, token_ttl=1)
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as short:
        token = token_for(short)
        headers = {"Authorization": f"Bearer {token}"}
        assert short.get(f"{RUNTIME}/jobs", headers=headers).status_code == 200
        time.sleep(1.1)
        expired = short.get(f"{RUNTIME}/jobs", headers=headers)
        missing = short.get(f"{RUNTIME}/jobs")
    assert expired.status_code == 401
    assert expired.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert "expired" in expired.headers["www-authenticate"]
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert app.state.exstream.auth_failures == {"expired": 1, "missing": 1}


def test_batch_input_checks_domain_channel_and_content_type(api: httpx.Client, emulator: ExstreamEmulator) -> None:
    batch = "/orchestration/api/v1/inputs/batch"
    wrong_domain = api.post(f"{batch}/other/push-status", content=b"a\n", headers=CSV)
    wrong_channel = api.post(f"{batch}/default/statements", content=b"a\n", headers=CSV)
    no_type = api.post(f"{batch}/default/push-status", content=b"a\n")
    xml = api.post(f"{batch}/default/push-status", content=b"<a/>", headers={"Content-Type": "application/xml"})
    with_charset = api.post(
        f"{batch}/default/push-status", content=b"a\n", headers={"Content-Type": "text/csv; charset=utf-8"}
    )
    assert (wrong_domain.status_code, wrong_channel.status_code) == (404, 404)
    assert wrong_domain.json()["details"] == "Domain other not found"
    assert wrong_channel.json()["details"] == "Input channel statements not found in domain default"
    assert (no_type.status_code, xml.status_code) == (415, 415)
    assert xml.json()["details"] == "Input channel push-status takes text/csv, not application/xml"
    assert with_charset.status_code == 200
    assert len([job for job in emulator.jobs.values() if job.fields["status"] == "started"]) == 1


def test_batch_input_channels_follow_the_products_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_CHANNEL_PUSH_STATUS", "bank-statuses")
    channels = create_exstream_app(None).state.exstream.channels
    assert channels["bank-statuses"] == {"text/csv"} and "push-status" not in channels
    assert "reissue" in channels


def test_unknown_domains_do_not_exist(api: httpx.Client) -> None:
    response = api.get("/orchestration/api/v1/runtime/other/jobs")
    assert response.status_code == 404
    assert response.json()["details"] == "Domain other not found"


def test_errors_can_be_answered_in_the_spring_boot_shape(emulator: ExstreamEmulator, api: httpx.Client) -> None:
    emulator.error_shape = "spring"
    missing = api.get(f"{RUNTIME}/jobs/{MISSING_JOB}")
    emulator.file_faults[docgen_step_id(FIXTURE_JOB)] = [500]
    failed = api.get(f"{RUNTIME}/flow-steps/{docgen_step_id(FIXTURE_JOB)}/delivery-file")
    unauthenticated = httpx.get(f"{str(api.base_url).rstrip('/')}{RUNTIME}/jobs")
    body = missing.json()
    assert missing.status_code == 404
    assert set(body) == {"timestamp", "status", "error", "message", "path", "details"}
    assert (body["status"], body["error"]) == (404, "Not Found")
    assert body["message"] == f"Job {MISSING_JOB} not found in domain default"
    assert body["path"] == f"{RUNTIME}/jobs/{MISSING_JOB}" and body["details"] == f"uri={body['path']}"
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert failed.status_code == 500
    assert (failed.json()["status"], failed.json()["error"]) == (500, "Internal Server Error")
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"] == "Unauthorized"
