"""Render: eligible recipients → messages that say a document is ready, link into the portal, and no more, each
encoded for its device's provider: an FCM message, an APNs body or a Web Push plaintext, all with the same data."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

import orjson
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from exstream_push.connectors import apns, webpush
from exstream_push.connectors.fcm import PayloadTooLargeError, Priority, build_message, encode
from exstream_push.content.guard import find_leak
from exstream_push.content.links import signed_link
from exstream_push.content.templates import TemplateRenderer
from exstream_push.ledger.store import notification_rows
from exstream_push.retrying import retry_if_it_can_succeed
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.status import PushProvider, QuarantineReason, Status

# Manifest values the guard looks for in every message; the document type is the one value a push may carry.
GUARDED_COLUMNS = ("customer_id", "document_id")


@task(name="render-messages", retries=1, retry_condition_fn=retry_if_it_can_succeed, cache_policy=NO_CACHE)
def render_messages(
    recipients: pd.DataFrame,
    use_case: str,
    category: str,
    as_of: datetime,
    extra_keys: Sequence[str] = (),
    priority: str = "normal",
) -> pd.DataFrame:
    """Adds ``payload``: each row's message encoded once for its provider (``encode_payload``), ready to post,
    and ``priority``; guard or size failures are quarantined. Only the bytes are kept: a ``messaging.Message``
    per recipient costs ~2 KB.

    The template is chosen by document type, or by a ``template`` column when the rows have one (a reminder's
    stage); a ``priority`` column overrides ``priority`` per row.
    """
    settings = get_settings()
    renderer = TemplateRenderer(settings.templates_dir)
    link_key = settings.link_key
    expires_at = as_of + settings.link_ttl
    locales = recipients["locale"].fillna(recipients["device_locale"]).fillna("en")
    guarded = [c for c in (*GUARDED_COLUMNS, *extra_keys) if c in recipients.columns]

    payloads: list[bytes] = []
    problems: list[str | None] = []
    count = len(recipients)
    templates = (recipients["template"] if "template" in recipients else recipients["document_type"]).tolist()
    priorities = recipients["priority"].tolist() if "priority" in recipients else [priority] * count
    guarded_values = list(zip(*(recipients[column].tolist() for column in guarded), strict=True)) or [()] * count
    rows = zip(
        recipients["key"].tolist(),
        recipients["provider"].tolist(),
        recipients["token"].tolist(),
        recipients["ref"].tolist(),
        recipients["document_type"].tolist(),
        locales.tolist(),
        templates,
        priorities,
        guarded_values,
        strict=True,
    )
    for key, provider, token, ref, document_type, locale, template, row_priority, values in rows:
        title, body = renderer.render(use_case, template, locale, document_type=document_type)
        data = {
            "use_case": use_case,
            "category": category,
            "document_type": renderer.shown_type(use_case, document_type),
            "document_ref": ref,
            "deep_link": signed_link(link_key, settings.portal_url, ref, expires_at),
        }
        leak = find_leak(title, body, data, values)
        try:
            payload = encode_payload(provider, token, title, body, data, key, row_priority)
        except PayloadTooLargeError as error:
            payload, leak = b"", leak or str(error)
        payloads.append(payload)
        problems.append(leak)

    rendered = recipients.assign(payload=payloads, priority=priorities, problem=problems)
    rejected = rendered[rendered["problem"].notna()]
    if len(rejected):
        reasons = [_reason_code(problem) for problem in rejected["problem"]]
        ledger_for(settings).record_final(
            notification_rows(rejected, use_case, Status.QUARANTINED, reason=reasons, as_of=as_of)
        )
    return rendered[rendered["problem"].isna()].drop(columns=["problem"]).reset_index(drop=True)


def encode_payload(
    provider: str, token: str, title: str, body: str, data: Mapping[str, str], key: str, priority: Priority
) -> bytes:
    """What the provider's sender posts for one device, within that provider's limit (else
    ``PayloadTooLargeError``). The data is the same for every provider: what a push may carry and nothing else.

    - FCM: the firebase-admin message (collapse key and priority inside it), as today;
    - APNs: ``{"aps": {"alert": {title, body}}, ...data}`` (collapse id, priority and expiry travel as headers);
    - Web Push: ``{"notification": {title, body}, "data": {...}}``, which the portal's service worker shows.
    """
    if provider == PushProvider.APNS:
        payload, limit = apns.apns_payload(title, body, data), apns.MAX_PAYLOAD_BYTES
    elif provider == PushProvider.WEBPUSH:
        payload = orjson.dumps({"notification": {"title": title, "body": body}, "data": dict(data)})
        limit = webpush.MAX_PLAINTEXT_BYTES
    else:
        message = build_message(token=token, title=title, body=body, data=data, collapse_key=key, priority=priority)
        return encode(message)
    if len(payload) > limit:
        raise PayloadTooLargeError(
            f"{QuarantineReason.PAYLOAD_TOO_LARGE}: {len(payload)} bytes, over {provider}'s {limit}-byte limit"
        )
    return payload


def _reason_code(problem: str) -> str:
    if problem.startswith(QuarantineReason.PAYLOAD_TOO_LARGE):
        return QuarantineReason.PAYLOAD_TOO_LARGE.value
    return f"{QuarantineReason.CONTENT_GUARD.value}: {json.dumps(problem)[1:-1]}"
