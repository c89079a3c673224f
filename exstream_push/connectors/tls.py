"""The TLS trust every HTTPS/HTTP-2 connector uses: the system's authorities, plus the one named by
``EXSTREAM_PUSH_CA_FILE`` (a bank's internal proxy authority, or the development emulators' own)."""

from __future__ import annotations

import ssl
from pathlib import Path


def client_ssl_context(ca_file: Path | None, *, http2: bool = False) -> ssl.SSLContext:
    """Verification always on; ``ca_file`` adds an authority, it never replaces the system's. ``http2`` offers
    ``h2`` by ALPN (APNs speaks nothing else)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        context.load_verify_locations(cafile=str(ca_file.expanduser()))
    if http2:
        context.set_alpn_protocols(["h2"])
    return context
