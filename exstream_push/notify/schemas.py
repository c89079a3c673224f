"""The frames the notify pipeline passes between its tasks, as Arrow schemas, and the one check against them.

A frame may carry more columns (a use case's manifest keys, which the content guard keeps out of a push); it must
carry every field of its schema, except those marked optional, with values of the field's type, and no null where
the field is not nullable. A mismatch is a programming error between two tasks: it is raised naming the boundary
and the columns, never a value (values are customer data).
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

_OPTIONAL = {b"optional": b"true"}
_STRING = pa.string()


def _optional(name: str, kind: pa.DataType = _STRING) -> pa.Field:
    """A column the frame may lack: a statement has no stage, a reminder taken from the ledger no device zone."""
    return pa.field(name, kind, metadata=_OPTIONAL)


# One row per notice owed: a document (at a stage, for a reminder), before devices.
NOTICES = pa.schema(
    [
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("job_id", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("document_type", pa.string(), nullable=False),
        pa.field("locale", pa.string()),
        pa.field("ref", pa.string(), nullable=False),
        _optional("stage"),
        _optional("template"),
        _optional("priority"),
    ]
)

# One row per (notice, device) that may be reached, with the idempotency key its send claims.
RECIPIENTS = pa.schema(
    [
        *NOTICES,
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("provider", pa.string(), nullable=False),  # fcm, apns or webpush: how ``token`` is reached
        pa.field("token", pa.string(), nullable=False),  # for webpush the subscription's endpoint
        pa.field("device_locale", pa.string()),
        pa.field("key", pa.string(), nullable=False),
        _optional("webpush_p256dh"),
        _optional("webpush_auth"),
        _optional("platform"),
        _optional("timezone"),
        _optional("push_opt_in", pa.bool_()),
        _optional("categories"),
    ]
)

# A recipient with its payload encoded for its provider (an FCM message, an APNs body, a Web Push plaintext).
MESSAGES = pa.schema([*RECIPIENTS, pa.field("payload", pa.binary(), nullable=False)])


def _fits(actual: pa.DataType, wanted: pa.DataType) -> bool:
    """The type Arrow reads a column as is the field's, or says nothing against it (every value null)."""
    return actual == wanted or pa.types.is_null(actual) or (actual, wanted) == (pa.large_string(), pa.string())


class FrameMismatch(TypeError):
    """A frame handed to a pipeline task does not have the shape that task expects."""


def conform(frame: pd.DataFrame, schema: pa.Schema, boundary: str) -> pd.DataFrame:
    """``frame`` unchanged when it fits ``schema``; otherwise a ``FrameMismatch`` naming what does not fit."""
    missing = [f.name for f in schema if f.name not in frame.columns and f.metadata != _OPTIONAL]
    if missing:
        raise FrameMismatch(f"{boundary}: the frame lacks {', '.join(missing)}")
    wrong, nulls = [], []
    present = [f for f in schema if f.name in frame.columns] if len(frame) else []  # no values: no type to tell
    for field in present:
        try:
            values = pa.array(frame[field.name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # values of mixed types
            values = None
        if values is None or not _fits(values.type, field.type):
            wrong.append(f"{field.name} ({frame[field.name].dtype}, not {field.type})")
            continue
        if not field.nullable and values.null_count:
            nulls.append(f"{field.name} ({values.null_count} row(s))")
    problems = [f"{what}: {', '.join(names)}" for what, names in (("wrong type", wrong), ("null", nulls)) if names]
    if problems:
        raise FrameMismatch(f"{boundary}: {'; '.join(problems)}")
    return frame
