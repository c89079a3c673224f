"""The Exstream connection as a Prefect block, so deployments load credentials by name instead of from env."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from exstream_push.connectors.exstream import ExstreamClient
from exstream_push.settings import BatchInputChannels, Settings

# A block's defaults are the settings' own, so the two ways of configuring a connection agree.
_DEFAULTS = Settings.model_fields


class ExstreamConnection(Block):
    """Where OpenText Exstream and its OTDS live, and the client credentials to use there."""

    _block_type_name = "Exstream Connection"
    _description = "OpenText Exstream orchestration API and OTDS client credentials for exstream-push."

    url: str = Field(
        default=_DEFAULTS["exstream_url"].default,
        description="Orchestration service URL, including the /orchestration base path.",
    )
    domain: str = Field(default=_DEFAULTS["exstream_domain"].default, description="Exstream domain the jobs run in.")
    otds_url: str = Field(
        default="http://127.0.0.1:8091/otdsws",
        description="OTDS URL; the token endpoint is {otds_url}/oauth2/token.",
    )
    client_id: str = Field(description="OTDS OAuth client id.")
    client_secret: SecretStr = Field(description="OTDS OAuth client secret.")
    status_channel: str = Field(
        default=BatchInputChannels().push_status,
        description="Batch input channel that receives push delivery statuses.",
    )
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait on each HTTP read.")

    def get_client(self) -> ExstreamClient:
        return ExstreamClient(
            self.url,
            self.domain,
            otds_url=self.otds_url,
            client_id=self.client_id,
            client_secret=self.client_secret.get_secret_value(),
            timeout=self.timeout,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ExstreamConnection:
        return cls(
            url=settings.exstream_url,
            domain=settings.exstream_domain,
            otds_url=settings.resolved_otds_url,
            client_id=settings.otds_client_id,
            client_secret=settings.otds_client_secret,
            status_channel=settings.channels.push_status,
        )
