"""Every push provider's connection in one bundle: what the notify pipeline and the send task take."""

from __future__ import annotations

from dataclasses import dataclass

from exstream_push.blocks.apns import ApnsConnection
from exstream_push.blocks.fcm import FcmConnection
from exstream_push.blocks.webpush import WebPushConnection
from exstream_push.status import PushProvider


@dataclass(frozen=True)
class PushConnections:
    """FCM always (Google's application-default credentials stand in for a missing key); APNs and Web Push only
    when configured: without one, messages to that provider's devices stay pending with
    ``configuration:<provider>_not_configured`` and the send task fails for an operator."""

    fcm: FcmConnection
    apns: ApnsConnection | None = None
    webpush: WebPushConnection | None = None

    def connection(self, provider: PushProvider) -> FcmConnection | ApnsConnection | WebPushConnection | None:
        if provider == PushProvider.APNS:
            return self.apns
        if provider == PushProvider.WEBPUSH:
            return self.webpush
        return self.fcm
