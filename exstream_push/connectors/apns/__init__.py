"""Apple Push Notification service, direct: token-based auth (ES256 JWT from the team's ``.p8`` key) over HTTP/2.

Transport: our own small client on the h2 package (``http2``; httpx's HTTP/2 cost ten times the CPU per message,
see there), not aioapns 4.0. aioapns is maintained and speaks h2 well, but it fits the shared batch driver badly:

- its host is a class constant (``APNsProductionClientProtocol.APNS_SERVER``, port 443), so reaching an emulator
  or an operator's proxy URL means subclassing its protocol classes;
- it owns what the driver owns: its pool retries lost connections itself (``max_connection_attempts``, fixed
  1-second sleeps) and spins on a busy pool, under the driver's limit, quota and backoff;
- its result keeps only the status, ``reason`` and ``timestamp``: no response headers, so no ``Retry-After``;
- it signs one JWT per connection it opens, renewed after 30 minutes, with no way to share a token between the
  senders a process builds batch after batch (Apple counts re-signing against ``TooManyProviderTokenUpdates``);
- it re-encodes the payload with ``json.dumps`` where render already encoded it once, reads the key only from a
  file path, and pulls in pyOpenSSL for certificate auth we do not use.

``http2`` leaves all of that to us: one client per batch (a TLS connection per 500 streams in flight, every
request a stream), the driver's concurrency, retries and quota, our TLS trust (``connectors/tls.py``), and the
provider token shared per key by every sender in the process (``token``).
"""

from exstream_push.connectors.apns.notification import (
    MAX_PAYLOAD_BYTES,
    ApnsNotification,
    ApnsPayloadTooLarge,
    InvalidDeviceToken,
    apns_payload,
    validate_device_token,
)
from exstream_push.connectors.apns.sender import (
    PRODUCTION_URL,
    SANDBOX_URL,
    ApnsError,
    ApnsSender,
    PreparedNotification,
    apns_url,
)
from exstream_push.connectors.apns.token import (
    MIN_REUSE_SECONDS,
    RENEW_AFTER_SECONDS,
    ApnsKeyInvalid,
    ApnsNotConfigured,
    ProviderToken,
    load_signing_key,
    provider_token,
)

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MIN_REUSE_SECONDS",
    "PRODUCTION_URL",
    "RENEW_AFTER_SECONDS",
    "SANDBOX_URL",
    "ApnsError",
    "ApnsKeyInvalid",
    "ApnsNotConfigured",
    "ApnsNotification",
    "ApnsPayloadTooLarge",
    "ApnsSender",
    "InvalidDeviceToken",
    "PreparedNotification",
    "ProviderToken",
    "apns_payload",
    "apns_url",
    "load_signing_key",
    "provider_token",
    "validate_device_token",
]
