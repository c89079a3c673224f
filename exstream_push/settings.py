"""The one settings object. Every tunable lives here and is read from ``EXSTREAM_PUSH_*`` variables."""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIX = "EXSTREAM_PUSH_"


class ManifestKeys(BaseSettings):
    """Names of the ``<key name=...>`` elements; each Exstream application defines its own."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}KEY_", extra="ignore")

    customer_id: str = "CustomerId"
    document_id: str = "DocumentId"
    document_type: str = "DocumentType"
    locale: str = "Locale"


class BatchInputChannels(BaseSettings):
    """The Exstream batch-input channels exstream-push posts its CSV hand-backs to, one per kind of hand-back;
    ``EXSTREAM_PUSH_CHANNEL_<NAME>`` names another (each Exstream installation names its own)."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}CHANNEL_", extra="ignore")

    push_status: str = "push-status"  # statement-ready: one row per document, notified or not
    policy_ack_overdue: str = "policy-ack-overdue"  # policy-change: unacknowledged past the deadline
    action_print_fallback: str = "action-print-fallback"  # action-required: a printed reminder instead
    reissue: str = "reissue"  # delivery-exceptions: documents to compose again
    channel_preferences: str = "channel-preferences"  # preference-sync: the channel Exstream should use
    ops_follow_up: str = "ops-follow-up"  # operational-alert: the formal follow-up letter
    document_status: str = "document-status"  # lifecycle-tracking: engagement changes
    fallback_delivery: str = "fallback-delivery"  # lifecycle-tracking: documents not opened in time


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    home: Path = Path(".exstream-push")
    database_url: str | None = None

    # A PEM authority trusted besides the system's by the push connectors (APNs, Web Push): a bank's TLS proxy,
    # or the development emulators' (exstream-push emulate prints it). Verification is never switched off.
    ca_file: Path | None = None

    fcm_url: str = "https://fcm.googleapis.com"
    fcm_project: str = "exstream-push"
    # The service account's JSON key (google-auth signs in with it, at the token_uri it names); unset, Google's
    # application-default credentials (GOOGLE_APPLICATION_CREDENTIALS, a metadata server) are used.
    fcm_service_account_file: Path | None = None
    fcm_concurrency: int = Field(64, ge=1, le=1000)  # requests in flight from the start of a batch
    # ...and at most, while FCM's round trips stay flat (connectors/concurrency.py): what hides a distant FCM
    fcm_max_concurrency: int = Field(512, ge=1, le=4096)
    fcm_max_attempts: int = Field(5, ge=1)

    # APNs direct, token-based: the team's .p8 signing key (Apple's developer site: Keys), its key id, the team id,
    # and the app's bundle id (apns-topic). "sandbox" for development builds of the app; apns_url overrides both.
    apns_team_id: str | None = None
    apns_key_id: str | None = None
    apns_key_file: Path | None = None
    apns_bundle_id: str | None = None
    apns_environment: Literal["production", "sandbox"] = "production"
    apns_url: str | None = None
    apns_concurrency: int = Field(64, ge=1, le=1000)  # streams in flight on the batch's one HTTP/2 connection
    apns_max_concurrency: int = Field(512, ge=1, le=1000)  # APNs allows 1,000 concurrent streams per connection
    apns_max_attempts: int = Field(5, ge=1)

    # Web Push (RFC 8292 VAPID): the application server's P-256 private key, PEM or the raw key in base64url (its
    # public half is the applicationServerKey the web portal subscribes with), and whom push services may contact.
    webpush_vapid_private_key_file: Path | None = None
    webpush_vapid_subject: str = Field("mailto:operations@example.invalid", pattern=r"^(mailto:|https://)")
    webpush_concurrency: int = Field(64, ge=1, le=1000)
    webpush_max_concurrency: int = Field(256, ge=1, le=4096)
    webpush_max_attempts: int = Field(5, ge=1)

    exstream_url: str = "http://127.0.0.1:8091/orchestration"
    exstream_domain: str = "default"
    otds_url: str | None = None
    otds_client_id: str = "exstream-push"
    otds_client_secret: SecretStr = SecretStr("exstream-push")

    portal_url: str = "https://portal.example.com/documents"
    link_secret: SecretStr | None = None
    link_ttl: timedelta = timedelta(days=30)
    fallback_after: timedelta = timedelta(hours=48)  # not opened by then → Exstream is asked for another channel

    templates_dir: Path = PROJECT_ROOT / "templates"
    config_dir: Path = PROJECT_ROOT / "config"
    data_dir: Path = PROJECT_ROOT / "data"

    ingress_secret: SecretStr | None = None
    # Where `exstream-push up` points the exstream-push-operations notification block it creates when the Prefect
    # server has none (prefect.yaml's failure automation sends through it). A secret: a Slack or Teams webhook URL
    # is a credential. Unset, `up` points it at its own operations inbox emulator.
    operations_webhook_url: SecretStr | None = None
    # The largest request body the ingress reads: 10,000 tracking events fit; a larger body gets 413 unread.
    ingress_max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # A closed loop (engagement → lifecycle tracking, preferences → preference sync, tracking failures → delivery
    # exceptions) is announced to Prefect at most once per this many seconds while input keeps arriving, so a burst
    # of thousands of signals starts a handful of runs; the last of a burst is announced once this has passed.
    loop_quiet_seconds: float = Field(15.0, ge=0)

    batch_size: int = Field(25_000, ge=1)
    # Batches one process has submitted at once: 2 overlaps rendering the next with sending this one; with one
    # worker process per core sharing a run, 1 each keeps two event loops from contending for one GIL.
    batches_in_flight: int = Field(2, ge=1)
    keys: ManifestKeys = Field(default_factory=ManifestKeys)
    channels: BatchInputChannels = Field(default_factory=BatchInputChannels)

    fcm_quota_per_minute: int = Field(480_000, ge=1)  # shared by every worker: 80% of FCM's 600,000 per project
    # Apple publishes no account-wide rate (it throttles per device, 429 TooManyRequests): a ceiling of our own.
    apns_quota_per_minute: int = Field(600_000, ge=1)
    # Push services (FCM for Chrome, Mozilla autopush, Apple's web push) publish none either; 429 is honoured.
    webpush_quota_per_minute: int = Field(120_000, ge=1)
    quota_backend: Literal["none", "prefect", "redis"] = "prefect"  # where the shared token bucket lives
    quota_group: int = Field(500, ge=1)  # permits taken per call to the quota backend
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Without PREFECT_API_URL: "shared" runs every command on one local Prefect server that outlives it (started
    # once, found again: exstream_push/prefect_server.py); "ephemeral" is Prefect's temporary server per command.
    prefect_server: Literal["shared", "ephemeral"] = "shared"
    dask_address: str | None = None  # an existing Dask scheduler for --task-runner dask; else a local cluster
    dask_workers: int | None = Field(None, ge=1)  # workers of that local cluster (Dask's default: one per core)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'ledger.db').resolve()}"

    @property
    def resolved_otds_url(self) -> str:
        """OTDS usually sits beside the orchestration service; default to the same origin."""
        if self.otds_url:
            return self.otds_url.rstrip("/")
        origin = self.exstream_url.split("/orchestration")[0].rstrip("/")
        return f"{origin}/otdsws"

    def spool_dir(self, use_case: str, run: str) -> Path:
        """Where a run keeps its working files (fetched manifests, Parquet batches, snapshots): one folder per use
        case and run, under the state folder that several workers of a run share."""
        return self.home / "spool" / use_case / run

    @cached_property
    def link_key(self) -> bytes:
        """The deep-link signing key; generated once into the state folder when none is configured."""
        if self.link_secret is not None:
            return self.link_secret.get_secret_value().encode()
        key_file = self.home / "link-secret"
        if not key_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            key_file.write_text(secrets.token_urlsafe(32))
            key_file.chmod(0o600)
        return key_file.read_text().strip().encode()


_configured: Settings | None = None


def _environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith(ENV_PREFIX)))


@lru_cache(maxsize=4)
def _settings_from(environment: tuple[tuple[str, str], ...]) -> Settings:
    return Settings()


def get_settings() -> Settings:
    """The process's settings: the ones a caller configured, else read once from the environment.

    Read again only when an ``EXSTREAM_PUSH_*`` variable changed since (tests set them per test), so the ~100
    callers share one object instead of parsing the environment each time.
    """
    if _configured is not None:
        return _configured
    return _settings_from(_environment())


def configure_settings(settings: Settings | None) -> None:
    """Make ``settings`` this process's own (the demo, the bench and the stack configure the product this way,
    instead of writing ``EXSTREAM_PUSH_*`` into the environment); ``None`` goes back to the environment's."""
    global _configured
    _configured = settings
