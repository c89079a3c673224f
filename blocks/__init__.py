"""Prefect blocks: named, saved connection settings a deployment loads at run time."""

from __future__ import annotations

from exstream_push.blocks.apns import ApnsConnection
from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.blocks.fcm import FcmConnection
from exstream_push.blocks.push import PushConnections
from exstream_push.blocks.webpush import WebPushConnection
from exstream_push.settings import get_settings


def exstream_connection(block_name: str | None) -> ExstreamConnection:
    """The saved block when a deployment names one, otherwise the environment's settings."""
    return ExstreamConnection.load(block_name) if block_name else ExstreamConnection.from_settings(get_settings())


def fcm_connection(block_name: str | None) -> FcmConnection:
    return FcmConnection.load(block_name) if block_name else FcmConnection.from_settings(get_settings())


def apns_connection(block_name: str | None) -> ApnsConnection | None:
    """The saved block, else the settings' when they name a signing key; None: APNs is not configured here."""
    if block_name:
        return ApnsConnection.load(block_name)
    settings = get_settings()
    return ApnsConnection.from_settings(settings) if settings.apns_key_file is not None else None


def webpush_connection(block_name: str | None) -> WebPushConnection | None:
    """The saved block, else the settings' when they name a VAPID key; None: Web Push is not configured here."""
    if block_name:
        return WebPushConnection.load(block_name)
    settings = get_settings()
    return WebPushConnection.from_settings(settings) if settings.webpush_vapid_private_key_file is not None else None


def push_connections(
    fcm_block: str | None, apns_block: str | None = None, webpush_block: str | None = None
) -> PushConnections:
    return PushConnections(
        fcm=fcm_connection(fcm_block), apns=apns_connection(apns_block), webpush=webpush_connection(webpush_block)
    )


def connections(
    exstream_block: str | None,
    fcm_block: str | None,
    apns_block: str | None = None,
    webpush_block: str | None = None,
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
