"""The Web Push connection as a Prefect block, so a deployment loads its VAPID key and subject by name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from exstream_push.connectors.webpush import VapidKeyMissing, load_vapid_key, load_vapid_key_file
from exstream_push.quota import SendQuota, send_quota
from exstream_push.settings import Settings, get_settings
from exstream_push.status import PushProvider

if TYPE_CHECKING:
    from exstream_push.connectors.webpush.sender import WebPushSender

# A block's defaults are the settings' own, so the two ways of configuring a connection agree.
_DEFAULTS = Settings.model_fields
QUOTA_KEY = "webpush"
"""Web Push's own bucket of the send quota: push services limit each sender apart from FCM's project quota."""


class WebPushConnection(Block):
    """Who we are to the browsers' push services (RFC 8292 VAPID): the private key's contents or a path to it
    (one of them), and the contact address they may reach us at. Subscriptions name their push service
    themselves, so there is no URL to configure; TLS trust is the deployment's (``EXSTREAM_PUSH_CA_FILE``)."""

    _block_type_name = "Web Push Connection"
    _description = "Standards Web Push (VAPID) key and subject for exstream-push."

    vapid_private_key: SecretStr | None = Field(
        default=None, description="The VAPID P-256 private key: PEM, or the raw key in base64url."
    )
    vapid_private_key_file: Path | None = Field(
        default=None, description="Path to the VAPID private key on the machine that runs the flow."
    )
    vapid_subject: str = Field(
        default=_DEFAULTS["webpush_vapid_subject"].default,
        pattern=r"^(mailto:|https://)",
        description="mailto: address or https: origin where push service operators can reach us.",
    )
    concurrency: int = Field(
        default=_DEFAULTS["webpush_concurrency"].default, ge=1, le=1000, description="Requests in flight at first."
    )
    max_concurrency: int = Field(
        default=_DEFAULTS["webpush_max_concurrency"].default,
        ge=1,
        le=4096,
        description="Requests in flight at most, reached while the push services' round trips stay flat.",
    )
    max_attempts: int = Field(
        default=_DEFAULTS["webpush_max_attempts"].default, ge=1, description="Attempts per message, the first included."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> WebPushConnection:
        if self.vapid_private_key is not None and self.vapid_private_key_file is not None:
            raise ValueError("give vapid_private_key or vapid_private_key_file, not both")
        return self

    def get_sender(self, quota: SendQuota | None = None) -> WebPushSender:
        """``VapidKeyMissing`` without a usable key. The quota, like the CA file, comes from the environment of the
        worker that sends, not from the saved block."""
        if self.vapid_private_key is not None:
            key = load_vapid_key(self.vapid_private_key.get_secret_value())
        elif self.vapid_private_key_file is not None:
            key = load_vapid_key_file(self.vapid_private_key_file)
        else:
            raise VapidKeyMissing("none configured")
        from exstream_push.connectors.webpush.sender import WebPushSender  # aiohttp, only where a task sends

        settings = get_settings()
        return WebPushSender(
            vapid_private_key=key,
            vapid_subject=self.vapid_subject,
            ca_file=settings.ca_file,
            concurrency=self.concurrency,
            max_concurrency=max(self.concurrency, self.max_concurrency),
            max_attempts=self.max_attempts,
            quota=quota if quota is not None else send_quota(settings, PushProvider.WEBPUSH, QUOTA_KEY),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> WebPushConnection:
        return cls(
            vapid_private_key_file=settings.webpush_vapid_private_key_file,
            vapid_subject=settings.webpush_vapid_subject,
            concurrency=settings.webpush_concurrency,
            max_concurrency=settings.webpush_max_concurrency,
            max_attempts=settings.webpush_max_attempts,
        )
