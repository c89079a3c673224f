"""Prefect blocks: named, saved connection settings a deployment loads at run time."""

from __future__ import annotations

from exstream_push.blocks.apns import ApnsConnection
from exstream_push.blocks.exstream import ExstreamConnection
from exstream_push.blocks.fcm import FcmConnection
from exstream_push.settings import get_settings


def exstream_connection(block_name: str | None) -> ExstreamConnection:
    """The saved block when a deployment names one, otherwise the environment's settings."""
    return ExstreamConnection.load(block_name) if block_name else ExstreamConnection.from_settings(get_settings())


def fcm_connection(block_name: str | None) -> FcmConnection:
    return FcmConnection.load(block_name) if block_name else FcmConnection.from_settings(get_settings())


def connections(exstream_block: str | None, fcm_block: str | None) -> tuple[ExstreamConnection, FcmConnection]:
    return exstream_connection(exstream_block), fcm_connection(fcm_block)


__all__ = [
    "ApnsConnection",
    "ExstreamConnection",
    "FcmConnection",
    "connections",
    "exstream_connection",
    "fcm_connection",
]
