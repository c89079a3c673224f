"""The APNs connection as a Prefect block, so a deployment loads its team, key and app by name."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from exstream_push.connectors.apns import ApnsNotConfigured, ApnsSender, apns_url
from exstream_push.quota import SendQuota, send_quota
from exstream_push.settings import Settings, get_settings
from exstream_push.status import PushProvider

# A block's defaults are the settings' own, so the two ways of configuring a connection agree.
_DEFAULTS = Settings.model_fields


class ApnsConnection(Block):
    """Who sends to Apple and for which app: the team's ``.p8`` signing key (its contents or a path to it, one of
    the two), key id, team id and the app's bundle id, in production or the sandbox (development builds)."""

    _block_type_name = "APNs Connection"
    _description = "Apple Push Notification service signing key, team and app for exstream-push."

    team_id: str = Field(description="Apple developer team id (10 characters), the provider token's issuer.")
    key_id: str = Field(description="Id of the APNs signing key (10 characters), the provider token's kid.")
    bundle_id: str = Field(description="The app's bundle id, sent as apns-topic.")
    signing_key: SecretStr | None = Field(default=None, description="Contents of the .p8 signing key (PEM).")
    signing_key_file: Path | None = Field(
        default=None, description="Path to the .p8 signing key on the machine that runs the flow."
    )
    environment: Literal["production", "sandbox"] = Field(
        default=_DEFAULTS["apns_environment"].default,
        description="production (App Store and TestFlight builds) or sandbox (development builds).",
    )
    url: str | None = Field(default=None, description="Overrides the environment's APNs URL (a proxy, an emulator).")
    concurrency: int = Field(
        default=_DEFAULTS["apns_concurrency"].default, ge=1, le=1000, description="Requests in flight from the start."
    )
    max_concurrency: int = Field(
        default=_DEFAULTS["apns_max_concurrency"].default,
        ge=1,
        le=1000,
        description="Requests in flight at most, reached while APNs' round trips stay flat.",
    )
    max_attempts: int = Field(
        default=_DEFAULTS["apns_max_attempts"].default, ge=1, description="Attempts per message, the first included."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> ApnsConnection:
        if (self.signing_key is None) == (self.signing_key_file is None):
            raise ValueError("give signing_key or signing_key_file, exactly one")
        return self

    def get_signing_key(self) -> str | bytes:
        if self.signing_key is not None:
            return self.signing_key.get_secret_value()
        assert self.signing_key_file is not None
        return self.signing_key_file.expanduser().read_bytes()

    def get_sender(self, quota: SendQuota | None = None) -> ApnsSender:
        """Like the quota, TLS trust (``EXSTREAM_PUSH_CA_FILE``) belongs to the worker that sends, not to the
        saved block."""
        settings = get_settings()
        return ApnsSender(
            team_id=self.team_id,
            key_id=self.key_id,
            signing_key=self.get_signing_key(),
            bundle_id=self.bundle_id,
            url=apns_url(self.environment, self.url),
            ca_file=settings.ca_file,
            concurrency=self.concurrency,
            max_concurrency=max(self.concurrency, self.max_concurrency),
            max_attempts=self.max_attempts,
            quota=quota if quota is not None else send_quota(settings, PushProvider.APNS, self.bundle_id),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApnsConnection:
        """``ApnsNotConfigured`` names what is missing: call it only when there are APNs devices to reach."""
        required = {
            "EXSTREAM_PUSH_APNS_TEAM_ID": settings.apns_team_id,
            "EXSTREAM_PUSH_APNS_KEY_ID": settings.apns_key_id,
            "EXSTREAM_PUSH_APNS_KEY_FILE": settings.apns_key_file,
            "EXSTREAM_PUSH_APNS_BUNDLE_ID": settings.apns_bundle_id,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise ApnsNotConfigured(missing)
        return cls(
            team_id=settings.apns_team_id,
            key_id=settings.apns_key_id,
            bundle_id=settings.apns_bundle_id,
            signing_key_file=settings.apns_key_file,
            environment=settings.apns_environment,
            url=settings.apns_url,
            concurrency=settings.apns_concurrency,
            max_concurrency=settings.apns_max_concurrency,
            max_attempts=settings.apns_max_attempts,
        )
