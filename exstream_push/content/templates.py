"""Jinja2 templates per use case, document type and locale, each with a ``title`` and a ``body`` block.

Lookup: ``{use_case}/{template}.{locale}.j2`` (the template is the document type, or a reminder's stage), then
the language alone (``fr-CA`` → ``fr``), then English, then the same for ``generic``. Templates see only the
document type, never customer data, so one rendering serves every recipient with the same (template, locale).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape


class TemplateMissing(LookupError):
    pass


def _normalise_type(document_type: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in document_type.strip().lower()).strip("_") or "generic"


def _locale_chain(locale: str | None) -> list[str]:
    chain: list[str] = []
    if locale:
        normalised = locale.replace("_", "-").strip()
        chain.append(normalised)
        language = normalised.split("-")[0].lower()
        if language not in chain:
            chain.append(language)
    if "en" not in chain:
        chain.append("en")
    return chain


class TemplateRenderer:
    def __init__(self, templates_dir: Path) -> None:
        self.environment = Environment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(default=False),
            keep_trailing_newline=False,
        )
        self._render = lru_cache(maxsize=4096)(self._render_uncached)

    def render(
        self, use_case: str, template: str, locale: str | None, document_type: str | None = None
    ) -> tuple[str, str]:
        """(title, body) for one template (a document type or a reminder stage) and locale; cached, since
        recipients share them. ``document_type`` defaults to the template name."""
        return self._render(use_case, template, locale, document_type or template)

    def _render_uncached(
        self, use_case: str, template_name: str, locale: str | None, document_type: str
    ) -> tuple[str, str]:
        names = [
            f"{use_case}/{kind}.{candidate}.j2"
            for kind in (_normalise_type(template_name), "generic")
            for candidate in _locale_chain(locale)
        ]
        try:
            template = self.environment.select_template(names)
        except TemplateNotFound as exc:
            raise TemplateMissing(f"no template for {use_case}; looked for {', '.join(names)}") from exc
        variables = {
            "document_type": document_type,
            "document_label": document_type.replace("_", " ").strip().lower(),
        }
        rendered_context = template.new_context(variables)
        title = "".join(template.blocks["title"](rendered_context)).strip()
        body = "".join(template.blocks["body"](rendered_context)).strip()
        return title, body
