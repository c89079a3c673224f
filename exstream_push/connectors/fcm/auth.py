"""Where FCM is and who we are to it: the send URL, the service account's OAuth credentials, and a firebase-admin
app pointed at the same place.

There is one way in, emulator or not: google-auth's credentials (a service-account key, whose ``token_uri`` may
point at a local token endpoint, or application-default credentials), refreshed before their tokens expire."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import firebase_admin
import google.auth
import google.auth.credentials
from firebase_admin import credentials as firebase_credentials
from firebase_admin import messaging

from exstream_push.errors import ExstreamPushError

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
SERVICE_ACCOUNT_SETTING = "EXSTREAM_PUSH_FCM_SERVICE_ACCOUNT_FILE"


class FcmCredentialsMissing(ExstreamPushError):
    """Nothing to sign in to FCM with: the run cannot send, and retrying will not change that."""

    exit_code = 78  # sysexits' EX_CONFIG

    def __init__(self, base_url: str) -> None:
        super().__init__(
            f"no FCM service account for {urlsplit(base_url).netloc or base_url}: set {SERVICE_ACCOUNT_SETTING} "
            "(or GOOGLE_APPLICATION_CREDENTIALS) to the service account's JSON key file"
        )


def fcm_send_url(base_url: str, project_id: str) -> str:
    return f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"


def _is_google_host(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def resolve_credentials(
    base_url: str, credentials: google.auth.credentials.Credentials | None = None
) -> google.auth.credentials.Credentials:
    """Given credentials, scoped for FCM; else ``GOOGLE_APPLICATION_CREDENTIALS``; else, for Google's own host,
    application-default credentials (a metadata server, workload identity). Anything else has no way in."""
    if credentials is not None:
        return google.auth.credentials.with_scopes_if_required(credentials, [FCM_SCOPE])
    if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or _is_google_host(base_url):
        # Application-default credentials read GOOGLE_APPLICATION_CREDENTIALS first, so a key file set
        # there is used without probing a metadata server.
        found, _ = google.auth.default(scopes=[FCM_SCOPE])
        return found
    raise FcmCredentialsMissing(base_url)


class _GoogleCredential(firebase_credentials.Base):
    """Hands firebase-admin a google-auth credential we already hold."""

    def __init__(self, credential: google.auth.credentials.Credentials) -> None:
        self._credential = credential

    def get_credential(self) -> google.auth.credentials.Credentials:
        return self._credential


@contextlib.asynccontextmanager
async def firebase_app_at(
    base_url: str,
    project_id: str,
    *,
    name: str = "exstream-push-fcm",
    credentials: google.auth.credentials.Credentials | None = None,
) -> AsyncIterator[firebase_admin.App]:
    """A firebase-admin app whose own ``messaging.send_each_async`` posts to ``base_url``, for the baseline
    benchmark and parity tests: ``async with firebase_app_at(url, project) as app: await
    messaging.send_each_async(messages, app=app)``. It is deleted on exit; use it within one event loop.
    """
    credential = resolve_credentials(base_url, credentials)
    app = firebase_admin.initialize_app(_GoogleCredential(credential), {"projectId": project_id}, name=name)
    # The SDK builds its endpoint from the class constant FCM_URL when the service is created and offers
    # no override (there is no official FCM emulator); rewriting this attribute of our app's service does.
    service = messaging._get_messaging_service(app)
    service._fcm_url = fcm_send_url(base_url, project_id)
    try:
        yield app
    finally:
        # delete_app closes the SDK's httpx client with its own asyncio.run(), which cannot run inside this
        # loop and cannot close connections opened in it: close them here, then delete from a thread.
        await service._async_client.aclose()
        await asyncio.to_thread(firebase_admin.delete_app, app)
