"""Signed links, opaque references, templates and the content guard."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from exstream_push.cli import main
from exstream_push.connectors.fcm import MAX_PAYLOAD_BYTES
from exstream_push.content.guard import find_leak, pattern_leak
from exstream_push.content.links import document_ref, signed_link, verify_link
from exstream_push.content.templates import TemplateMissing, TemplateRenderer
from exstream_push.flows.statement_ready import statement_ready
from exstream_push.settings import PROJECT_ROOT
from tests.conftest import exstream_inbox, fcm_messages
from tests.test_policy_change import write_devices, write_manifest

KEY = b"k" * 32
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
PORTAL = "https://portal.example.com/documents"
TTL = timedelta(days=30)
verify = partial(verify_link, portal_url=PORTAL, lifetime=TTL)


def test_link_round_trip_tamper_and_expiry() -> None:
    ref = document_ref(KEY, "statement-ready", "DOC-1")
    link = signed_link(KEY, "https://portal.example.com/documents", ref, NOW + timedelta(days=1))
    assert link.startswith(f"https://portal.example.com/documents/{ref}?exp=")
    assert "DOC-1" not in link
    assert verify(KEY, link, NOW).valid
    assert not verify(KEY, link, NOW + timedelta(days=2)).valid
    assert verify(KEY, link, NOW + timedelta(days=2)).reason == "link has expired"
    assert not verify(b"other" * 8, link, NOW).valid
    other_ref = document_ref(KEY, "statement-ready", "DOC-2")
    assert not verify(KEY, link.replace(ref, other_ref), NOW).valid
    later = link.replace("exp=", "exp=9")
    assert not verify(KEY, later, NOW).valid
    assert not verify(KEY, "https://portal.example.com/documents/x", NOW).valid


def test_refs_are_stable_and_distinct() -> None:
    assert document_ref(KEY, "statement-ready", "A") == document_ref(KEY, "statement-ready", "A")
    assert document_ref(KEY, "statement-ready", "A") != document_ref(KEY, "statement-ready", "B")
    assert document_ref(KEY, "statement-ready", "A") != document_ref(b"x" * 32, "statement-ready", "A")


def test_cli_links_verify_exit_codes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path))
    monkeypatch.setenv("EXSTREAM_PUSH_LINK_SECRET", "cli-secret")
    monkeypatch.setenv("EXSTREAM_PUSH_PORTAL_URL", "https://p.example/d")
    key = b"cli-secret"
    link = signed_link(key, "https://p.example/d", "REF", datetime.now(UTC) + timedelta(hours=1))
    assert main(["links", "verify", link]) == 0
    assert main(["links", "verify", link.replace("REF", "REG")]) == 1
    expired = signed_link(key, "https://p.example/d", "REF", datetime.now(UTC) - timedelta(seconds=1))
    assert main(["links", "verify", expired]) == 1


def _link(portal: str = PORTAL, expires_at: datetime = NOW + timedelta(days=1)) -> str:
    return signed_link(KEY, portal, document_ref(KEY, "statement-ready", "DOC-1"), expires_at)


@pytest.mark.parametrize(
    "moved",
    [
        lambda link: link.replace("https://portal.example.com/", "https://evil.example/"),
        lambda link: link.replace("https://", "http://"),
        lambda link: link.replace("/documents/", "/other/"),
        lambda link: link.replace("/documents/", "/documents/extra/"),
        lambda link: link.replace("?exp=", "/?exp="),
        lambda link: link + "&foo=bar",
        lambda link: link + "#fragment",
        lambda link: link.replace("portal.example.com", "PORTAL.example.com"),
        # signed with our key, for another portal, then pointed at this one
        lambda link: _link("https://other.example/documents").replace(
            "https://other.example/", "https://portal.example.com/"
        ),
    ],
    ids=[
        "host",
        "scheme",
        "path",
        "extra-segment",
        "trailing-slash",
        "extra-parameter",
        "fragment",
        "host-case",
        "resigned",
    ],
)
def test_a_link_verifies_only_as_it_was_issued(moved: Any) -> None:
    assert verify(KEY, _link(), NOW).valid
    check = verify(KEY, moved(_link()), NOW)
    assert not check.valid and check.reason != "valid"


def test_an_expiry_beyond_the_link_lifetime_is_refused_even_when_signed() -> None:
    assert verify(KEY, _link(expires_at=NOW + TTL + timedelta(minutes=1)), NOW).valid  # within the clock skew
    far = verify(KEY, _link(expires_at=datetime(9999, 12, 31, tzinfo=UTC)), NOW)
    assert not far.valid and far.reason == "link expires later than the link lifetime allows"
    assert not verify(KEY, _link(expires_at=NOW + TTL + timedelta(hours=1)), NOW).valid


MALFORMED_LINKS = [
    f"{PORTAL}/REF?exp={'9' * 5000}&sig=abc",
    f"{PORTAL}/REF?exp=\u00b2&sig={'a' * 43}",
    f"{PORTAL}/REF?exp=-1&sig={'a' * 43}",
    f"{PORTAL}/REF?exp=1&exp=2&sig={'a' * 43}",
    f"{PORTAL}/REF?sig={'a' * 43}&exp=1",
    f"{PORTAL}/",
    "",
    "not a url",
    "https://[::1",
]


def test_cli_links_verify_explains_every_malformed_link_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path))
    monkeypatch.setenv("EXSTREAM_PUSH_LINK_SECRET", "cli-secret")
    monkeypatch.setenv("EXSTREAM_PUSH_PORTAL_URL", PORTAL)
    for url in MALFORMED_LINKS:
        capsys.readouterr()
        assert main(["links", "verify", url]) == 1
        out = capsys.readouterr().out
        assert out.startswith("not a") and out.count("\n") == 1
    signed_for_ever = signed_link(b"cli-secret", PORTAL, "REF", datetime(9999, 1, 1, tzinfo=UTC))
    assert main(["links", "verify", signed_for_ever]) == 1
    assert capsys.readouterr().out == "link expires later than the link lifetime allows\n"


def test_generated_link_key_is_kept_in_the_state_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from exstream_push.settings import Settings

    monkeypatch.delenv("EXSTREAM_PUSH_LINK_SECRET", raising=False)
    first = Settings(home=tmp_path).link_key
    assert first == Settings(home=tmp_path).link_key
    assert (tmp_path / "link-secret").stat().st_mode & 0o077 == 0


def test_templates_fall_back_by_locale_then_to_generic() -> None:
    renderer = TemplateRenderer(PROJECT_ROOT / "templates")
    assert renderer.render("statement-ready", "STATEMENT", "fr-CA")[0] == "Votre relevé est disponible"
    assert renderer.render("statement-ready", "STATEMENT", "pt")[0] == "Your statement is ready"
    title, body = renderer.render("statement-ready", "TAX_FORM", "en")
    assert title == "A new document is ready" and "tax form" in body
    with pytest.raises(TemplateMissing):
        renderer.render("no-such-use-case", "STATEMENT", "en")


@pytest.mark.parametrize(
    ("title", "body", "data", "values", "leaks"),
    [
        ("Your statement is ready", "Tap to view it.", {"ref": "abc"}, ["C0001", "Alice Smith"], False),
        ("Hello Alice Smith", "Tap.", {}, ["Alice Smith"], True),
        ("Ready", "Tap.", {"x": "see C0001"}, ["C0001"], True),
        ("Ready", "Write to a@b.com", {}, [], True),
        ("Ready", "Account 1234 5678 90", {}, [], True),
        ("Ready", "You owe $12", {}, [], True),
        ("Ready", "Amount 12.50 EUR", {}, [], True),
        ("Ready", "Tap.", {}, ["en", None, ""], False),
    ],
)
def test_content_guard(title: str, body: str, data: dict, values: list, leaks: bool) -> None:
    assert (find_leak(title, body, data, values) is not None) is leaks


# Texts each pattern of the guard used to read again from every position: minutes at this length, if linear a blink.
HOSTILE_TEXTS = [
    ("a" * 100_000, None),
    ("a" * 100_000 + "@example.org", "title or body contains an e-mail address"),
    ("a@" * 50_000, None),
    ("1," * 50_000, None),
    ("1," * 50_000 + " EUR", "title or body contains an amount"),
    ("1" + " -" * 50_000, None),
    ("1" + " -" * 50_000 + "2", "title or body contains a number"),
]


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("text", "expected"), HOSTILE_TEXTS, ids=lambda value: repr(value)[:12])
def test_the_guard_reads_a_long_hostile_text_in_one_pass(text: str, expected: str | None) -> None:
    assert pattern_leak("Ready", text) == expected
    # Longer than any message may be: rejected as too large whatever it contains.
    reason = find_leak("Ready", text, {}, [text[:50_000]])
    assert reason is not None and reason.startswith("payload_too_large:")


def test_the_guard_bounds_its_input_to_one_message() -> None:
    at_limit = "é" * (MAX_PAYLOAD_BYTES // 2 - 1)  # two bytes each, with a byte to spare for the one-byte title
    assert find_leak("T", at_limit, {}, []) is None
    assert find_leak("T", at_limit + "é", {}, []).startswith("payload_too_large:")  # counted in bytes, not chars
    assert find_leak("T", "a@b.com", {"document_type": "x" * MAX_PAYLOAD_BYTES}, []).startswith("payload_too_large:")
    assert find_leak("T", "Write to a@b.com", {}, ["y" * (MAX_PAYLOAD_BYTES + 1)]) == (
        "title or body contains an e-mail address"
    )


# -- what a notification may show of the document type ---------------------------------------------------------

HOSTILE_TYPES = [
    "urgent verify your login at evil.example",
    "\u202eTNEMETATS",
    "=cmd|' /C calc'!A0",
    "x" * 100_000,
]
NEUTRAL = {"en": "document", "fr": "document", "de": "Dokument", "es": "documento"}
GENERIC_TEMPLATES = sorted((PROJECT_ROOT / "templates").glob("*/generic.*.j2"))


@pytest.mark.parametrize("path", GENERIC_TEMPLATES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_an_unknown_document_type_shows_the_neutral_word_in_every_generic_template(path: Path) -> None:
    renderer = TemplateRenderer(PROJECT_ROOT / "templates")
    use_case, locale = path.parent.name, path.name.split(".")[1]
    shows_label = "document_label" in path.read_text(encoding="utf-8")
    for document_type in HOSTILE_TYPES:
        title, body = renderer.render(use_case, document_type, locale)
        for text in (title, body):
            assert "evil" not in text and "\u202e" not in text and "cmd" not in text and "xxx" not in text
            assert "TNEMETATS".lower() not in text.lower()
        if shows_label:
            assert NEUTRAL[locale] in body


def test_a_known_document_type_shows_its_own_label_in_the_templates_language() -> None:
    renderer = TemplateRenderer(PROJECT_ROOT / "templates")
    assert "Steuerformular" in renderer.render("statement-ready", "TAX_FORM", "de")[1]
    assert "formulario fiscal" in renderer.render("statement-ready", "tax form", "es-MX")[1]
    assert "facture" in renderer.render("action-required", "NOTICE_X", "fr-CA", document_type="BILL")[1]
    # German has no action-required template: the English one is chosen, and so is the English label.
    assert renderer.render("action-required", "NOTICE_X", "de", document_type="BILL")[1] == (
        "A bill needs your attention in your secure portal."
    )


def test_hostile_document_types_reach_no_notification_through_the_render_task(
    prefect_harness: None, env: dict[str, str], fcm: Any, exstream: Any, tmp_path: Path
) -> None:
    records, devices = [], []
    for number, (document_type, locale) in enumerate(
        [(document_type, locale) for document_type in HOSTILE_TYPES[:3] for locale in NEUTRAL]
        + [(HOSTILE_TYPES[3], "en")]  # 100,000 characters: no record may carry it
    ):
        customer = f"C{number:05d}"
        records.append({"CustomerId": customer, "DocumentId": f"D{number:05d}", "DocumentType": document_type})
        records[-1]["Locale"] = locale
        devices.append(
            {
                "customer_id": customer,
                "device_id": f"dev-{number}",
                "platform": "android",
                "token": f"tok-{number}",
                "push_opt_in": "true",
                "locale": locale,
                "timezone": "UTC",
                "categories": "",
            }
        )
    write_manifest(tmp_path / "manifest.xml", records)
    write_devices(tmp_path / "devices.csv", devices)
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0

    result = statement_ready(manifest=str(tmp_path / "manifest.xml"), job_id="JOB-HOSTILE-TYPES")

    assert result["sent"] == len(records) - 1
    (post,) = [p for p in exstream_inbox(exstream) if p["path"].endswith("/push-status")]
    outcomes = {row["document_id"]: row for row in csv.DictReader(io.StringIO(post["body"]))}
    # A 100,000-character type is refused at extraction, before any template or pattern sees it.
    assert outcomes[records[-1]["DocumentId"]]["reason"] == "id_too_long"
    assert {row["push_status"] for row in outcomes.values()} == {"notified", "not_notified"}
    for message in fcm_messages(fcm):
        title, body = message["notification"]["title"], message["notification"]["body"]
        locale = devices[int(message["token"].removeprefix("tok-"))]["locale"]
        assert NEUTRAL[locale] in body
        for text in (title, body, *message["data"].values()):
            assert "evil" not in text and "\u202e" not in text and "cmd" not in text
        assert message["data"]["document_type"] == "other"


def test_the_document_type_catalogue_is_required_and_complete(tmp_path: Path) -> None:
    with pytest.raises(TemplateMissing, match=r"document-types\.yaml not found"):
        TemplateRenderer(tmp_path)
    (tmp_path / "document-types.yaml").write_text(
        "neutral: {en: document, fr: document}\ntypes:\n  BILL: {en: bill}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="document type BILL has no label for fr"):
        TemplateRenderer(tmp_path)
