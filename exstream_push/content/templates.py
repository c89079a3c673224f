"""Jinja2 templates per use case, document type and locale, each with a ``title`` and a ``body`` block.

Lookup: ``{use_case}/{template}.{locale}.j2`` (the template is the document type, or a reminder's stage), then
the language alone (``fr-CA`` → ``fr``), then English, then the same for ``generic``. Templates never see manifest
text: ``document_label`` is the catalogue's word for a known document type in the template's own language
(``document-types.yaml``), the neutral word for any other. So one rendering serves every recipient with the same
(template, document type, locale), and nothing an Exstream application writes can reach a notification.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import yaml
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape
from pydantic import BaseModel, ConfigDict, model_validator

from exstream_push.errors import ExstreamPushError

CATALOGUE_FILE = "document-types.yaml"
# Longer template names and document types are never a known one: they select the generic template and the
# neutral word without being normalised, looked up as a file name or kept as a cache key.
MAX_NAME_LENGTH = 64
# A BCP 47 tag as the templates are named (``fr``, ``fr-CA``, ``zh-Hant-TW``); anything else renders in English.
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,3}")


class TemplateMissing(ExstreamPushError, LookupError):
    """No template, or no document-type catalogue, where the templates folder should have one."""


def _normalise_type(name: str | None) -> str | None:
    """The template-file and catalogue form of a name (``Tax form`` → ``tax_form``); None when it cannot be one."""
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
        return None
    return "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in name.strip().lower()).strip("_") or None


def _clean_locale(locale: str | None) -> str | None:
    """The locale as a tag (``fr_CA`` → ``fr-CA``), None for anything that is not one."""
    if not isinstance(locale, str) or not _LOCALE.fullmatch(locale.strip()):
        return None
    return locale.strip().replace("_", "-")


def _locale_chain(locale: str | None) -> list[str]:
    chain: list[str] = []
    if locale:
        chain.append(locale)
        language = locale.split("-")[0].lower()
        if language not in chain:
            chain.append(language)
    if "en" not in chain:
        chain.append("en")
    return chain


class DocumentTypes(BaseModel):
    """``document-types.yaml``: the neutral word per locale and, per known document type, its word per locale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    neutral: dict[str, str]
    types: dict[str, dict[str, str]]

    @model_validator(mode="after")
    def _every_type_in_every_locale(self) -> DocumentTypes:
        if "en" not in self.neutral:
            raise ValueError("neutral needs an 'en' word, the last fallback")
        for name, labels in self.types.items():
            missing = sorted(set(self.neutral) - set(labels))
            if missing:
                raise ValueError(f"document type {name} has no label for {', '.join(missing)}")
        return self

    @classmethod
    def load(cls, path: Path) -> DocumentTypes:
        if not path.is_file():
            raise TemplateMissing(f"{path} not found: it lists the document types a push may name, with their labels")
        catalogue = cls.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        types = {_normalise_type(name): labels for name, labels in catalogue.types.items()}
        if None in types or len(types) != len(catalogue.types):
            raise ValueError(f"{path}: document type names must be distinct identifiers")
        return cls(neutral=catalogue.neutral, types=types)

    def known(self, document_type: str | None) -> str | None:
        """The catalogue key of a known document type, None for any other value."""
        key = _normalise_type(document_type)
        return key if key in self.types else None

    def label(self, key: str | None, locale: str) -> str:
        """The word a template in ``locale`` shows: the type's own, else the neutral word."""
        labels = self.types.get(key, self.neutral) if key else self.neutral
        return next(labels[candidate] for candidate in _locale_chain(locale) if candidate in labels)


UNKNOWN_TYPE = "other"
"""``data.document_type`` of a push whose document type is not known."""


class TemplateRenderer:
    def __init__(self, templates_dir: Path) -> None:
        self.environment = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(default=False),
            keep_trailing_newline=False,
        )
        self.document_types = DocumentTypes.load(templates_dir / CATALOGUE_FILE)
        self._render = lru_cache(maxsize=4096)(self._render_uncached)
        self._templates: frozenset[str] | None = None

    def render(
        self, use_case: str, template: str, locale: str | None, document_type: str | None = None
    ) -> tuple[str, str]:
        """(title, body) for one template (a document type or a reminder stage) and locale; cached, since
        recipients share them. ``document_type`` defaults to the template name; only whether it is a known type
        reaches the template, so the cache is keyed on that and not on the manifest's text."""
        known = self.document_types.known(document_type or template)
        return self._render(use_case, _normalise_type(template) or "generic", _clean_locale(locale), known)

    def shown_type(self, use_case: str, document_type: str | None) -> str:
        """What a push's ``data.document_type`` may say: a known document type's catalogue key, the name of a
        template this use case ships (an alert kind, a reminder stage), else ``other``; never the manifest's text."""
        known = self.document_types.known(document_type)
        if known is not None:
            return known
        name = _normalise_type(document_type) if document_type else None
        if name and self.environment.loader is not None:
            prefix = f"{use_case}/{name}."
            if any(template.startswith(prefix) for template in self._shipped()):
                return name
        return UNKNOWN_TYPE

    def _shipped(self) -> frozenset[str]:
        if self._templates is None:
            self._templates = frozenset(self.environment.list_templates(extensions=["j2"]))
        return self._templates

    def _render_uncached(
        self, use_case: str, template_name: str, locale: str | None, known_type: str | None
    ) -> tuple[str, str]:
        chain = _locale_chain(locale)
        names = [
            f"{use_case}/{kind}.{candidate}.j2"
            for kind in dict.fromkeys((template_name, "generic"))
            for candidate in chain
        ]
        try:
            template = self.environment.select_template(names)
        except TemplateNotFound as exc:
            raise TemplateMissing(f"no template for {use_case}; looked for {', '.join(names)}") from exc
        written_in = template.name.rsplit(".", 2)[-2] if template.name else "en"
        variables = {"document_label": self.document_types.label(known_type, written_in)}
        rendered_context = template.new_context(variables)
        title = "".join(template.blocks["title"](rendered_context)).strip()
        body = "".join(template.blocks["body"](rendered_context)).strip()
        return title, body
