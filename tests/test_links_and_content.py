"""Signed links, opaque references, templates and the content guard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exstream_push.cli import main
from exstream_push.content.guard import find_leak
from exstream_push.content.links import document_ref, signed_link, verify_link
from exstream_push.content.templates import TemplateMissing, TemplateRenderer
from exstream_push.settings import PROJECT_ROOT

KEY = b"k" * 32
NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)


def test_link_round_trip_tamper_and_expiry() -> None:
    ref = document_ref(KEY, "statement-ready", "DOC-1")
    link = signed_link(KEY, "https://portal.example.com/documents", ref, NOW + timedelta(days=1))
    assert link.startswith(f"https://portal.example.com/documents/{ref}?exp=")
    assert "DOC-1" not in link
    assert verify_link(KEY, link, NOW).valid
    assert not verify_link(KEY, link, NOW + timedelta(days=2)).valid
    assert verify_link(KEY, link, NOW + timedelta(days=2)).reason == "link has expired"
    assert not verify_link(b"other" * 8, link, NOW).valid
    other_ref = document_ref(KEY, "statement-ready", "DOC-2")
    assert not verify_link(KEY, link.replace(ref, other_ref), NOW).valid
    later = link.replace("exp=", "exp=9")
    assert not verify_link(KEY, later, NOW).valid
    assert not verify_link(KEY, "https://portal.example.com/documents/x", NOW).valid


def test_refs_are_stable_and_distinct() -> None:
    assert document_ref(KEY, "statement-ready", "A") == document_ref(KEY, "statement-ready", "A")
    assert document_ref(KEY, "statement-ready", "A") != document_ref(KEY, "statement-ready", "B")
    assert document_ref(KEY, "statement-ready", "A") != document_ref(b"x" * 32, "statement-ready", "A")


def test_cli_links_verify_exit_codes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path))
    monkeypatch.setenv("EXSTREAM_PUSH_LINK_SECRET", "cli-secret")
    key = b"cli-secret"
    link = signed_link(key, "https://p.example/d", "REF", datetime.now(UTC) + timedelta(hours=1))
    assert main(["links", "verify", link]) == 0
    assert main(["links", "verify", link.replace("REF", "REG")]) == 1
    expired = signed_link(key, "https://p.example/d", "REF", datetime.now(UTC) - timedelta(seconds=1))
    assert main(["links", "verify", expired]) == 1


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
