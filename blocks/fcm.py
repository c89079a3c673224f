"""The FCM connection as a Prefect block, so a deployment loads its endpoint and service account by name."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import google.auth.credentials
import orjson
from google.oauth2 import service_account
from prefect.blocks.core import Block
from prefect.blocks.fields import SecretDict
from pydantic import Field, model_validator

from exstream_push.connectors.fcm import FCM_SCOPE
from exstream_push.quota import SendQuota, send_quota
from exstream_push.settings import Settings, get_settings
from exstream_push.status import PushProvider

if TYPE_CHECKING:
    from exstream_push.connectors.fcm import FcmSender

# A block's defaults are the settings' own, so the two ways of configuring a connection agree.
_DEFAULTS = Settings.model_fields
_SENDERS: dict[str, FcmSender] = {}
"""This process's sender per connection (``get_sender``); batches on several threads share one."""
_SENDERS_LOCK = threading.Lock()


class FcmConnection(Block):
    """Where FCM lives, which project sends, and the service account to send as (like prefect-gcp's
    GcpCredentials: the key's contents or a path to it; neither means Google's application-default credentials).
    The key's ``token_uri`` says where google-auth exchanges its signed JWT for access tokens: Google's own, or a
    local token emulator's."""

    _block_type_name = "FCM Connection"
    _description = "Firebase Cloud Messaging endpoint, project and service account for exstream-push."

    url: str = Field(
        default=_DEFAULTS["fcm_url"].default,
        description="FCM base URL; messages go to {url}/v1/projects/{project_id}/messages:send.",
    )
    project_id: str = Field(description="Firebase project that sends the messages.")
    service_account_info: SecretDict | None = Field(
        default=None, description="Contents of the service account JSON key."
    )
    service_account_file: Path | None = Field(
        default=None, description="Path to the service account JSON key on the machine that runs the flow."
    )
    concurrency: int = Field(
        default=_DEFAULTS["fcm_concurrency"].default, ge=1, le=1000, description="Requests in flight from the start."
    )
    max_concurrency: int = Field(
        default=_DEFAULTS["fcm_max_concurrency"].default,
        ge=1,
        le=4096,
        description="Requests in flight at most, reached while FCM's round trips stay flat.",
    )
    max_attempts: int = Field(
        default=_DEFAULTS["fcm_max_attempts"].default, ge=1, description="Attempts per message, the first included."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> FcmConnection:
        if self.service_account_info is not None and self.service_account_file is not None:
            raise ValueError("give service_account_info or service_account_file, not both")
        return self

    def get_credentials(self) -> google.auth.credentials.Credentials | None:
        if self.service_account_info is not None:
            return service_account.Credentials.from_service_account_info(
                self.service_account_info.get_secret_value(), scopes=[FCM_SCOPE]
            )
        if self.service_account_file is not None:
            return service_account.Credentials.from_service_account_file(
                str(self.service_account_file.expanduser()), scopes=[FCM_SCOPE]
            )
        return None

    def get_sender(self, quota: SendQuota | None = None) -> FcmSender:
        """The project's shared send quota comes from the environment of the worker that sends, not from the
        saved block: where the bucket lives (Prefect, Redis) is a property of the deployment.

        Without a ``quota`` of the caller's, one sender per connection and process serves every batch, so a batch
        starts at the in-flight limit the previous one learnt and with its access token, instead of slow start
        and a sign-in per batch."""
        if quota is not None:
            return self._new_sender(quota)
        settings = get_settings()
        # Where the bucket lives is the worker's setting, so it is part of which sender is "the same" one.
        key = self._identity() + repr(
            (settings.quota_backend, settings.redis_url, settings.fcm_quota_per_minute, settings.quota_group)
        )
        with _SENDERS_LOCK:
            if key not in _SENDERS:
                _SENDERS[key] = self._new_sender(send_quota(settings, PushProvider.FCM, self.project_id))
            return _SENDERS[key]

    def _identity(self) -> str:
        """Everything a sender is built from, the key's contents included (the block's JSON masks them)."""
        return orjson.dumps(
            {
                **self.model_dump(mode="json", exclude={"service_account_info"}),
                "service_account_info": self.service_account_info and self.service_account_info.get_secret_value(),
            },
            option=orjson.OPT_SORT_KEYS,
        ).decode()

    def _new_sender(self, quota: SendQuota) -> FcmSender:
        """The transport is imported here, by the task that sends, not by every command that loads the flow."""
        from exstream_push.connectors.fcm import FcmSender

        return FcmSender(
            base_url=self.url,
            project_id=self.project_id,
            credentials=self.get_credentials(),
            concurrency=self.concurrency,
            max_concurrency=max(self.concurrency, self.max_concurrency),
            max_attempts=self.max_attempts,
            quota=quota,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FcmConnection:
        return cls(
            url=settings.fcm_url,
            project_id=settings.fcm_project,
            service_account_file=settings.fcm_service_account_file,
            concurrency=settings.fcm_concurrency,
            max_concurrency=settings.fcm_max_concurrency,
            max_attempts=settings.fcm_max_attempts,
        )
