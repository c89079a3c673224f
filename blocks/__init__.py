"""Prefect blocks: named, saved connection settings a deployment loads at run time."""

from __future__ import annotations

from exstream_push.blocks.apns import ApnsConnection
from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.blocks.fcm import FcmConnection
from exstream_push.blocks.push import PushConnections
from exstream_push.blocks.webpush import WebPushConnection
from exstream_push.settings import get_settings


def exstream_connection(block: ExstreamConnection | None) -> ExstreamConnection:
    """The block a run was given (picked in the run form, or saved and named by a deployment), else the settings'."""
    return block if block is not None else ExstreamConnection.from_settings(get_settings())


def fcm_connection(block: FcmConnection | None) -> FcmConnection:
    return block if block is not None else FcmConnection.from_settings(get_settings())


def apns_connection(block: ApnsConnection | None) -> ApnsConnection | None:
    """The block given, else the settings' when they name a signing key; None: APNs is not configured here."""
    if block is not None:
        return block
    settings = get_settings()
    return ApnsConnection.from_settings(settings) if settings.apns_key_file is not None else None


def webpush_connection(block: WebPushConnection | None) -> WebPushConnection | None:
    """The block given, else the settings' when they name a VAPID key; None: Web Push is not configured here."""
    if block is not None:
        return block
    settings = get_settings()
    return WebPushConnection.from_settings(settings) if settings.webpush_vapid_private_key_file is not None else None


def push_connections(
    fcm_block: FcmConnection | None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
) -> PushConnections:
    return PushConnections(
        fcm=fcm_connection(fcm_block), apns=apns_connection(apns_block), webpush=webpush_connection(webpush_block)
    )


def connections(
    exstream_block: ExstreamConnection | None,
    fcm_block: FcmConnection | None,
    apns_block: ApnsConnection | None = None,
    webpush_block: WebPushConnection | None = None,
) -> tuple[ExstreamConnection, PushConnections]:
    """What a flow that pushes needs: Exstream, and every push provider configured."""
    return exstream_connection(exstream_block), push_connections(fcm_block, apns_block, webpush_block)


__all__ = [
    "ApnsConnection",
    "ExstreamConnection",
    "FcmConnection",
    "PushConnections",
    "WebPushConnection",
    "apns_connection",
    "connections",
    "exstream_connection",
    "fcm_connection",
    "push_connections",
    "webpush_connection",
]
