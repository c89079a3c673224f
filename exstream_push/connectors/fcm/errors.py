"""FCM failures as firebase-admin's own exception classes (how long a provider asks us to wait is every
provider's: ``exstream_push.connectors.push.parse_retry_after``)."""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
import google.auth.exceptions
import httpx
from firebase_admin import _utils as firebase_utils
from firebase_admin import exceptions, messaging

__all__ = ["firebase_error", "transport_error"]


def firebase_error(url: str, status: int, headers: Sequence[tuple[str, str]], body: bytes) -> exceptions.FirebaseError:
    """The exception firebase-admin itself would produce for this FCM error response.

    The SDK builds it (messaging.UnregisteredError & co, with the same ``.code`` and message) only from an
    httpx error, through two private functions; replaying the response through them keeps its mapping
    authoritative instead of copied. Only failures pay for this.
    """
    request = httpx.Request("POST", url)
    response = httpx.Response(status, headers=headers, content=body, request=request)
    error = httpx.HTTPStatusError(f"FCM answered HTTP {status}", request=request, response=response)
    return firebase_utils.handle_platform_error_from_httpx(error, messaging._MessagingService._build_fcm_error_httpx)


def transport_error(error: Exception) -> exceptions.FirebaseError:
    """The exception classes firebase-admin uses when no response arrived (see its ``handle_httpx_error``);
    a token endpoint that refuses our key is an authentication error, one that cannot be reached a transient
    one."""
    if isinstance(error, google.auth.exceptions.RefreshError):
        return exceptions.UnauthenticatedError(f"Could not obtain an OAuth token for FCM: {error}", cause=error)
    if isinstance(error, google.auth.exceptions.TransportError):
        return exceptions.UnavailableError(f"Could not reach the OAuth token endpoint: {error!r}", cause=error)
    if isinstance(error, TimeoutError):
        return exceptions.DeadlineExceededError(f"Timed out while making an API call: {error!r}", cause=error)
    if isinstance(error, aiohttp.ClientConnectionError):
        return exceptions.UnavailableError(f"Failed to establish a connection: {error!r}", cause=error)
    return exceptions.UnknownError(f"Unknown error while making a remote service call: {error!r}", cause=error)
