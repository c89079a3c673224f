"""Payment reminders end to end: real Prefect, emulators on loopback, SQLite and PostgreSQL, runs at fixed as_of.

The expectations come from `Simulation`, an independent reading of the issue's rules written with the standard
library: the default ladder (-3, 0, +1, +15, +30 days), at most 2 reminders per customer in any 7 days (most
advanced stage first, then earliest due date, then document id), quiet hours 21:00–08:00 in the device's zone.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.content.links import document_ref
from exstream_push.flows.payment_reminders import payment_reminders
from exstream_push.ledger import Document, Notification, RejectedRecord
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push_dev.emulators.exstream import job_uuid
from tests.conftest import fcm_messages

USE_CASE = "payment-reminders"
REM_JOB = job_uuid("REM-JOB")
T1 = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LADDER = [("due_soon", -3), ("due_today", 0), ("overdue", 1), ("seriously_overdue", 15), ("final_demand", 30)]
TITLES = {
    ("due_soon", "en"): "Payment reminder",
    ("due_today", "en"): "Payment due today",
    ("overdue", "en"): "Payment overdue",
    ("seriously_overdue", "en"): "Your payment is overdue",
    ("final_demand", "en"): "Final reminder: payment required",
    ("due_soon", "fr"): "Rappel de paiement",
    ("due_today", "fr"): "Paiement attendu aujourd'hui",
    ("overdue", "fr"): "Paiement en retard",
    ("seriously_overdue", "fr"): "Votre paiement est en retard",
    ("final_demand", "fr"): "Dernier rappel : paiement requis",
}
CAP, WINDOW = 2, timedelta(days=7)
TIMEZONES = ["Europe/London", "Europe/Paris", "America/New_York", "America/Chicago", "Asia/Tokyo", "Asia/Singapore", ""]
OFFSETS = [-10, -4, -3, -2, -1, 0, 1, 6, 7, 14, 15, 22, 29, 30, 45]  # days past due at T1
BAD_DUE_DATES = ["2026-02-30", "29/11/2026", "soon", ""]


@dataclass
class Doc:
    document_id: str
    customer_id: str
    due: str
    amount: str
    segment: str | None
    locale: str
    document_type: str = "PAYMENT_REMINDER"

    @property
    def due_date(self) -> date | None:
        try:
            return date.fromisoformat(self.due) if len(self.due) == 10 else None
        except ValueError:
            return None


@dataclass
class Dev:
    device_id: str
    customer_id: str
    token: str
    timezone: str
    opted_in: bool
    categories: str


@dataclass
class Scenario:
    docs: list[Doc]
    devices: list[Dev]
    payments: list[tuple[str, str, str]]  # customer_id, document_id, paid_at

    def write(self, folder: Path) -> tuple[Path, Path, Path]:
        manifest, devices, payments = folder / "_STDDELIVERYFILE.xml", folder / "devices.csv", folder / "payments.csv"
        with manifest.open("w", encoding="utf-8") as out:
            out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<outputList customersProcessed="{len(self.docs)}">\n')
            for doc in self.docs:
                keys = [
                    ("CustomerId", doc.customer_id),
                    ("DocumentId", doc.document_id),
                    ("DocumentType", doc.document_type),
                    ("Locale", doc.locale),
                    ("DueDate", doc.due),
                    ("AmountDue", doc.amount),
                    ("CustomerName", f"Name of {doc.customer_id}"),
                    ("Email", f"{doc.customer_id.lower()}@example.com"),
                ]
                if doc.segment is not None:
                    keys.append(("RiskSegment", doc.segment))
                out.write("  <customer>\n")
                for name, value in keys:
                    out.write(f"    <key name={quoteattr(name)}>{escape(value)}</key>\n")
                out.write("    <queueName>PDF</queueName>\n  </customer>\n")
            out.write("</outputList>\n")
        with devices.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(
                ["customer_id", "device_id", "platform", "token", "push_opt_in", "locale", "timezone", "categories"]
            )
            for dev in self.devices:
                writer.writerow(
                    [
                        dev.customer_id,
                        dev.device_id,
                        "android",
                        dev.token,
                        str(dev.opted_in).lower(),
                        "",
                        dev.timezone,
                        dev.categories,
                    ]
                )
        with payments.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["customer_id", "document_id", "paid_at"])
            writer.writerows(self.payments)
        return manifest, devices, payments


def build_scenario(customers: int, seed: int) -> Scenario:
    rng = random.Random(seed)
    docs, devices = [], []
    for number in range(1, customers + 1):
        customer = f"C{number:06d}"
        for index in range(rng.choices([1, 2, 3], [55, 25, 20])[0]):
            offset = rng.choice(OFFSETS)
            due = (T1.date() - timedelta(days=offset)).isoformat()
            if rng.random() < 0.03:
                due = rng.choice(BAD_DUE_DATES)
            docs.append(
                Doc(
                    document_id=f"INV-{number:06d}-{index}",
                    customer_id=customer,
                    due=due,
                    amount=f"{rng.randrange(1_000, 900_000) / 100:.2f}",
                    segment=rng.choice(["A-prime", "B-standard", "C-elevated", "D-watchlist", None]),
                    locale=rng.choice(["en", "en", "fr"]),
                )
            )
        for index in range(rng.choices([0, 1, 2], [10, 60, 30])[0]):
            devices.append(
                Dev(
                    device_id=f"dev-{number:06d}-{index}",
                    customer_id=customer,
                    token=f"tok-{number:06d}-{index}-{rng.getrandbits(48):012x}",
                    timezone=rng.choice(TIMEZONES),
                    opted_in=rng.random() >= 0.08,
                    categories=rng.choices(["", "payments;statements", "statements"], [80, 10, 10])[0],
                )
            )
    valid = [doc for doc in docs if doc.due_date is not None]
    paid = rng.sample(valid, len(valid) // 10)
    payments = [(doc.customer_id, doc.document_id, "2026-11-28T10:00:00Z") for doc in paid[:-4]]
    payments += [(doc.customer_id, doc.document_id, "2026-11-29T18:00:00+00:00") for doc in paid[-4:]]  # after T1
    payments += [
        ("C999999", "INV-UNKNOWN", "2026-11-28"),  # no such document
        (
            "C000001" if paid[0].customer_id != "C000001" else "C000002",
            paid[0].document_id,
            "2026-11-28",
        ),  # wrong customer
        (paid[1].customer_id, paid[1].document_id, "yesterday"),  # not a date
    ]
    return Scenario(docs, devices, payments)


@dataclass
class Row:
    status: str
    reason: str | None
    as_of: datetime
    not_before: datetime | None = None


@dataclass
class Simulation:
    """What the ledger and FCM must show after each run, from the rules alone."""

    scenario: Scenario
    rows: dict[tuple[str, str, str], Row] = field(default_factory=dict)  # (document, device or "", stage) → row
    paid: set[str] = field(default_factory=set)

    def stage(self, doc: Doc, as_of: datetime) -> str | None:
        past_due = (as_of.date() - doc.due_date).days
        reached = [name for name, days in LADDER if past_due >= days]
        return reached[-1] if reached else None

    def quiet_until(self, dev: Dev, as_of: datetime) -> datetime | None:
        zone = ZoneInfo(dev.timezone or "UTC")
        local = as_of.astimezone(zone)
        if time(8) <= local.time() < time(21):
            return None
        day = local.date() + timedelta(days=1 if local.time() >= time(21) else 0)
        return datetime.combine(day, time(8), tzinfo=zone).astimezone(UTC)

    def eligible(self, dev: Dev) -> str | None:
        if not dev.opted_in:
            return "opted_out"
        if dev.categories and "payments" not in dev.categories.split(";"):
            return "category_opted_out"
        return None

    def run(self, as_of: datetime, with_payments: bool) -> Counter[tuple[str, str, str]]:
        """Returns the (document, device, stage) sent by this run."""
        docs = {doc.document_id: doc for doc in self.scenario.docs if doc.due_date is not None}
        devices = {dev.device_id: dev for dev in self.scenario.devices}
        customer_of = {doc.document_id: doc.customer_id for doc in self.scenario.docs}
        sent: Counter[tuple[str, str, str]] = Counter()
        if with_payments:
            for customer_id, document_id, paid_at in self.scenario.payments:
                try:
                    moment = datetime.fromisoformat(paid_at)
                except ValueError:
                    continue
                moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
                doc = docs.get(document_id)
                if doc and doc.customer_id == customer_id and moment <= as_of and document_id not in self.paid:
                    self.paid.add(document_id)
                    self.rows[(document_id, "", "")] = Row("skipped", "paid", as_of)
        for (document_id, device_id, stage), row in self.rows.items():
            if row.status == "deferred" and row.not_before <= as_of:
                if document_id in self.paid:
                    row.status, row.reason, row.as_of = "skipped", "paid", as_of
                else:
                    row.status, row.as_of = "sent", as_of
                    sent[(document_id, device_id, stage)] += 1
        decided = {(document_id, stage) for document_id, _, stage in self.rows}
        by_customer: dict[str, list[tuple[int, date, str, str]]] = {}
        for doc in docs.values():
            stage = self.stage(doc, as_of)
            if doc.document_id in self.paid or stage is None or (doc.document_id, stage) in decided:
                continue
            rank = [name for name, _ in LADDER].index(stage)
            by_customer.setdefault(doc.customer_id, []).append((-rank, doc.due_date, doc.document_id, stage))
        for customer_id, candidates in by_customer.items():
            recent = {
                (document_id, stage)
                for (document_id, _, stage), row in self.rows.items()
                if customer_of[document_id] == customer_id
                and row.status in ("sent", "deferred", "pending")
                and as_of - WINDOW < row.as_of <= as_of
            }
            for position, (_, _, document_id, stage) in enumerate(sorted(candidates)):
                if position + len(recent) >= CAP:
                    self.rows[(document_id, "", stage)] = Row("skipped", "frequency_capped", as_of)
                    continue
                own = [dev for dev in devices.values() if dev.customer_id == customer_id]
                if not own:
                    self.rows[(document_id, "", stage)] = Row("skipped", "no_device", as_of)
                for dev in own:
                    key = (document_id, dev.device_id, stage)
                    if reason := self.eligible(dev):
                        self.rows[key] = Row("skipped", reason, as_of)
                    elif later := self.quiet_until(dev, as_of):
                        self.rows[key] = Row("deferred", None, as_of, later)
                    else:
                        self.rows[key] = Row("sent", None, as_of)
                        sent[key] += 1
        return sent

    def outcomes(self, as_of: datetime) -> Counter[tuple[str, str, str, str]]:
        segments = {doc.document_id: doc.segment or "unknown" for doc in self.scenario.docs}
        return Counter(
            (stage or "-", segments[document_id], row.status, row.reason or "")
            for (document_id, _, stage), row in self.rows.items()
            if row.as_of == as_of
        )


def _ledger_rows() -> dict[tuple[str, str, str], tuple[str, str | None]]:
    with ledger_for(get_settings()).engine.connect() as conn:
        rows = conn.execute(
            select(
                Notification.document_id,
                Notification.device_id,
                Notification.stage,
                Notification.status,
                Notification.reason,
            ).where(Notification.use_case == USE_CASE)
        )
        return {(d, dev, stage): (status, reason) for d, dev, stage, status, reason in rows}


def _sent_in(messages: list[dict], scenario: Scenario) -> Counter[tuple[str, str, str]]:
    """FCM messages → (document, device, stage): the document from its opaque ref, the stage from the title."""
    key = get_settings().link_key
    by_ref = {document_ref(key, USE_CASE, doc.document_id): doc for doc in scenario.docs}
    by_token = {dev.token: dev.device_id for dev in scenario.devices}
    stage_of = {(title, locale): stage for (stage, locale), title in TITLES.items()}
    sent: Counter[tuple[str, str, str]] = Counter()
    for message in messages:
        doc = by_ref[message["data"]["document_ref"]]
        stage = stage_of[(message["notification"]["title"], doc.locale)]
        sent[(doc.document_id, by_token[message["token"]], stage)] += 1
    return sent


def _assert_no_customer_data(messages: list[dict], scenario: Scenario) -> None:
    key = get_settings().link_key
    by_ref = {document_ref(key, USE_CASE, doc.document_id): doc for doc in scenario.docs}
    for message in messages:
        doc = by_ref[message["data"]["document_ref"]]
        text = json.dumps({name: value for name, value in message.items() if name != "token"})
        private = [doc.amount, doc.due, doc.customer_id, doc.document_id, f"Name of {doc.customer_id}", doc.segment]
        leaked = [value for value in private if value and value in text]
        assert not leaked, f"a reminder for {doc.document_id} carries {leaked}"
        assert "@" not in text


def test_ladder_payments_cap_and_quiet_hours_over_a_week(
    prefect_harness: None,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    fcm,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    monkeypatch.setenv("EXSTREAM_PUSH_BATCH_SIZE", "60")  # several pages of customers, several task runs each
    scenario = build_scenario(customers=360, seed=2)
    manifest, devices, payments = scenario.write(tmp_path)
    assert main(["devices", "import", str(devices)]) == 0
    simulation = Simulation(scenario)

    runs = [
        (T1, {"manifest": str(manifest), "job_id": "REM-1", "payments": str(payments)}),
        (T1 + timedelta(minutes=30), {}),  # the same day again: nothing new
        (T1 + timedelta(hours=1), {}),  # 08:00 in New York: its deferred reminders go, and nothing else
        (T1 + timedelta(hours=2), {}),  # 08:00 in Chicago
        (T1 + timedelta(days=1), {"payments": str(payments)}),  # Tokyo's, the next stages, the payment made after T1
        (T1 + timedelta(days=1), {}),  # that day again
        (T1 + timedelta(days=7), {}),  # T1's reminders leave the cap's window
    ]
    seen, sent_per_run = 0, []
    for as_of, parameters in runs:
        result = payment_reminders(as_of=as_of, **parameters)
        expected = simulation.run(as_of, with_payments="payments" in parameters)
        messages = fcm_messages(fcm)
        assert _sent_in(messages[seen:], scenario) == expected, f"run at {as_of}"
        assert result.get("sent", 0) == sum(expected.values())
        seen = len(messages)
        sent_per_run.append(sum(expected.values()))
        assert _ledger_rows() == {key: (row.status, row.reason) for key, row in simulation.rows.items()}
        outcomes = Counter(
            {(r["stage"], r["risk_segment"], r["status"], r["reason"]): r["count"] for r in result["outcomes"]}
        )
        assert outcomes == simulation.outcomes(as_of)

    # The scenario exercised every rule: the same-day re-runs sent nothing, the release runs sent only what quiet
    # hours held back, every reminder went out once, and none carried customer data.
    assert sent_per_run[1] == sent_per_run[5] == 0 and all(sent_per_run[i] > 0 for i in (0, 2, 3, 4))
    statuses = Counter((row.status, row.reason) for row in simulation.rows.values())
    for outcome in [("skipped", "paid"), ("skipped", "frequency_capped"), ("skipped", "no_device"), ("sent", None)]:
        assert statuses[outcome] > 0, outcome
    all_sent = _sent_in(messages, scenario)
    assert all_sent and max(all_sent.values()) == 1
    assert {stage for _, _, stage in all_sent} == {name for name, _ in LADDER}
    _assert_no_customer_data(messages, scenario)

    # Bad due dates are quarantined with their line, and never reminded.
    bad = {doc.document_id for doc in scenario.docs if doc.due_date is None}
    with ledger_for(get_settings()).engine.connect() as conn:
        rejected = conn.execute(
            select(RejectedRecord.document_id, RejectedRecord.reason, RejectedRecord.line).where(
                RejectedRecord.use_case == USE_CASE
            )
        ).fetchall()
        paid_documents = set(conn.scalars(select(Document.document_id).where(Document.state == "paid")))
    assert bad and {document_id for document_id, _, _ in rejected} == bad
    assert {reason for _, reason, _ in rejected} == {"invalid_due_date"} and all(line for _, _, line in rejected)
    assert paid_documents == simulation.paid


def test_artifact_and_invalid_payments(prefect_harness: None, env: dict[str, str], fcm, tmp_path: Path) -> None:
    scenario = build_scenario(customers=40, seed=5)
    manifest, devices, payments = scenario.write(tmp_path)
    assert main(["devices", "import", str(devices)]) == 0
    result = payment_reminders(manifest=str(manifest), payments=str(payments), as_of=T1)
    assert result["paid"] == len(scenario.payments) - 4 - 3  # not the four paid after T1 nor the three bad rows
    assert result["payments_after_as_of"] == 4
    assert result["payments_unmatched"] == 2  # unknown document, wrong customer
    assert result["payments_invalid"] == 1

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["payment-reminders-summary"]))
        )
    latest = max(artifacts, key=lambda artifact: artifact.created)
    table = result["outcomes"]
    assert {row["stage"] for row in table} >= {"-", "due_soon"}
    assert set(table[0]) == {"stage", "risk_segment", "status", "reason", "count"}
    # The summary is the flow run's, a markdown page with the run's outcome table in it.
    assert latest.type == "markdown" and latest.flow_run_id is not None and latest.task_run_id is None
    assert "| stage | risk_segment | status | reason | count |" in latest.data
    for row in table:
        assert f"| {row['stage']} | {row['risk_segment']} | {row['status']} |" in latest.data


def test_cli_manifest_job_and_daily_run(
    prefect_harness: None,
    env: dict[str, str],
    fcm,
    exstream,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scenario = Scenario(
        docs=[
            Doc("A-1", "C1", "2026-11-29", "120.00", "low", "en"),  # due today
            Doc("A-2", "C2", "2026-11-30", "75.10", "high", "fr"),  # due tomorrow: due_soon
            Doc("A-3", "C3", "2026-12-05", "99.99", "low", "en"),  # not yet on the ladder
            # A document type that happens to carry the amount: no push may carry it (an unknown type is never shown
            # nor sent in data), so the reminder goes without it.
            Doc("A-4", "C4", "2026-11-29", "4321.55", "low", "en", document_type="NOTICE_4321.55"),
        ],
        devices=[Dev(f"d{n}", f"C{n}", f"tok-{n}", "Europe/London", True, "") for n in range(1, 5)],
        payments=[],
    )
    manifest, devices, _ = scenario.write(tmp_path)
    assert main(["devices", "import", str(devices)]) == 0
    capsys.readouterr()

    as_of = "2026-11-29T13:00:00+01:00"
    assert main(["run", "payment-reminders", "--manifest", str(manifest), "--job", "REM-CLI", "--as-of", as_of]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["registered"] == 4 and result["sent"] == 3 and result["as_of"] == "2026-11-29T12:00:00+00:00"
    titles = sorted(m["notification"]["title"] for m in fcm_messages(fcm))
    assert titles == ["Payment due today", "Payment due today", "Rappel de paiement"]
    assert not any("4321" in json.dumps(message) for message in fcm_messages(fcm))
    rows = _ledger_rows()
    assert rows[("A-4", "d4", "due_today")][0] == "sent"

    # A new document through the Orchestration API: C2 had one reminder today, so a second one is allowed.
    job_folder = tmp_path / "job"
    job_folder.mkdir()
    job_manifest, _, _ = Scenario([Doc("B-1", "C2", "2026-11-29", "10.00", None, "en")], [], []).write(job_folder)
    exstream.app.state.exstream.put_job({"id": REM_JOB}, delivery_text=job_manifest.read_text())
    assert main(["run", "payment-reminders", "--job", REM_JOB, "--as-of", as_of]) == 0
    out = capsys.readouterr().out
    result = json.loads(out[out.index("{") :])
    assert result["job_id"] == REM_JOB and result["registered"] == 1 and result["sent"] == 1
    assert fcm_messages(fcm)[3]["notification"]["title"] == "Payment due today"

    # A daily run with neither: are overdue; C2 has had two reminders in 7 days, so its two are capped;
    # A-3 reaches due_soon. A-3 is then paid before it is due, and nothing more goes.
    assert main(["run", "payment-reminders", "--as-of", "2026-12-02T09:00:00+00:00"]) == 0
    capsys.readouterr()
    daily = sorted(m["notification"]["title"] for m in fcm_messages(fcm)[4:])
    assert daily == ["Payment overdue", "Payment overdue", "Payment reminder"]
    capped = {key for key, (_, reason) in _ledger_rows().items() if reason == "frequency_capped"}
    assert capped == {("A-2", "", "overdue"), ("B-1", "", "overdue")}
    paid = tmp_path / "paid.csv"
    paid.write_text("customer_id,document_id,paid_at\nC3,A-3,2026-12-03T10:00:00Z\n")
    assert main(["run", "payment-reminders", "--payments", str(paid), "--as-of", "2026-12-05T09:00:00+00:00"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{") :])["paid"] == 1
    assert len(fcm_messages(fcm)) == 7


def test_deferred_and_left_pending_go_once_on_the_next_run_unless_paid_or_opted_out(
    prefect_harness: None, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fcm, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_FCM_MAX_ATTEMPTS", "1")  # a failed attempt leaves the row pending
    scenario = Scenario(
        docs=[Doc(f"P-{n}", f"C{n}", "2026-11-29", "50.00", "A-prime", "en") for n in range(1, 5)],
        devices=[
            Dev("d1", "C1", "tok-1", "America/New_York", True, ""),  # 07:00 at T1: deferred to 08:00, then paid
            Dev("d2", "C2", "tok-2", "America/New_York", True, ""),  # deferred, then opted out
            Dev("d3", "C3", "tok-3", "America/New_York", True, ""),  # deferred, then sent
            Dev("d4", "C4", "flaky-tok-4", "Europe/London", True, ""),  # FCM unavailable at T1: left pending
        ],
        payments=[("C1", "P-1", "2026-11-29T12:20:00Z")],
    )
    manifest, devices, payments = scenario.write(tmp_path)
    assert main(["devices", "import", str(devices)]) == 0

    first = payment_reminders(manifest=str(manifest), as_of=T1)
    assert first.get("sent", 0) == 0 and first["retry_exhausted"] == 1
    rows = _ledger_rows()
    assert [rows[(f"P-{n}", f"d{n}", "due_today")][0] for n in range(1, 5)] == ["deferred"] * 3 + ["pending"]
    with ledger_for(get_settings()).engine.connect() as conn:
        not_before = set(conn.scalars(select(Notification.not_before).where(Notification.status == "deferred")))
    assert {moment.replace(tzinfo=moment.tzinfo or UTC) for moment in not_before} == {T1 + timedelta(hours=1)}

    assert payment_reminders(as_of=T1 + timedelta(minutes=59)).get("sent", 0) == 1  # only the pending one
    devices.write_text(devices.read_text().replace("C2,d2,android,tok-2,true", "C2,d2,android,tok-2,false"))
    assert main(["devices", "import", str(devices)]) == 0
    second = payment_reminders(payments=str(payments), as_of=T1 + timedelta(hours=1))
    assert second["released"] == 3 and second["paid"] == 1 and second["sent"] == 1
    rows = _ledger_rows()
    assert rows[("P-1", "d1", "due_today")] == ("skipped", "paid")
    assert rows[("P-2", "d2", "due_today")] == ("skipped", "opted_out")
    assert rows[("P-3", "d3", "due_today")] == ("sent", None)
    assert rows[("P-4", "d4", "due_today")] == ("sent", None)

    assert payment_reminders(as_of=T1 + timedelta(hours=2)).get("sent", 0) == 0
    assert sorted(m["token"] for m in fcm_messages(fcm)) == ["flaky-tok-4", "tok-3"]
