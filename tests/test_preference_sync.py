"""Preference sync: what changed since the last sync, one row per customer, channel by the documented rule."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from exstream_push.cli import main
from exstream_push.flows.preference_sync import preference_sync
from exstream_push.ledger import Preference
from exstream_push.ledger.store import utcnow
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings
from exstream_push.usecases.preference_sync.rules import decide_channel
from tests.conftest import exstream_inbox

DEVICES = """customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories
C1,d1a,android,t1a,true,en,Europe/London,statements;bills
C1,d1b,ios,t1b,false,en,Europe/London,
C2,d2,web,t2,false,fr,Europe/Paris,
C4,d4,android,t4,true,en,Europe/London,
"""


def _posts(exstream) -> list[list[dict[str, str]]]:
    return [
        list(csv.DictReader(io.StringIO(p["body"])))
        for p in exstream_inbox(exstream)
        if p["path"].endswith("/channel-preferences")
    ]


@pytest.mark.parametrize(
    ("push_enabled", "devices", "stated", "channel"),
    [
        (True, 1, {"default": "email"}, "push"),
        (True, 0, {"default": "email"}, "email"),
        (False, 2, {}, "print"),
        (False, 0, {"statements": "web"}, "web"),
        (False, 0, {"default": "carrier-pigeon"}, "print"),
    ],
)
def test_channel_rule(push_enabled: bool, devices: int, stated: dict[str, str], channel: str) -> None:
    assert decide_channel(push_enabled, devices, stated) == channel


def test_sync_posts_changes_once_with_latest_state(
    prefect_harness: None, env: dict[str, str], exstream, tmp_path: Path, database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    (tmp_path / "devices.csv").write_text(DEVICES)
    assert main(["devices", "import", str(tmp_path / "devices.csv")]) == 0
    ledger = ledger_for(get_settings())
    ledger.deactivate_devices(["d4"], "fcm:UNREGISTERED")
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(Preference.__table__),
            [{"customer_id": "C3", "push_opt_in": None, "categories": None,
              "preferred_channels": json.dumps({"default": "email"}), "updated_at": utcnow()}],
        )  # fmt: skip
    start = datetime.now(UTC) + timedelta(minutes=1)

    first = preference_sync(as_of=start)
    assert first["customers"] == 4 and first["post"]["posted"] is True
    rows = {row["customer_id"]: row for row in _posts(exstream)[-1]}
    assert set(rows) == {"C1", "C2", "C3", "C4"}
    assert (rows["C1"]["push_enabled"], rows["C1"]["active_devices"], rows["C1"]["preferred_channel"]) == (
        "true", "2", "push",
    )  # fmt: skip
    assert rows["C1"]["categories"] == "bills;statements"
    assert (rows["C2"]["push_enabled"], rows["C2"]["preferred_channel"]) == ("false", "print")
    assert (rows["C3"]["active_devices"], rows["C3"]["preferred_channel"]) == ("0", "email")
    assert (rows["C4"]["active_devices"], rows["C4"]["preferred_channel"]) == ("0", "print")

    assert preference_sync(as_of=start + timedelta(minutes=1))["customers"] == 0
    assert len(_posts(exstream)) == 1

    ledger.deactivate_devices(["d1a"], "fcm:UNREGISTERED")
    (tmp_path / "more.csv").write_text(DEVICES.splitlines()[0] + "\nC2,d2,web,t2,true,fr,Europe/Paris,\n")
    assert main(["devices", "import", str(tmp_path / "more.csv")]) == 0
    third = preference_sync(as_of=datetime.now(UTC) + timedelta(minutes=5))
    assert third["customers"] == 2
    rows = {row["customer_id"]: row for row in _posts(exstream)[-1]}
    assert set(rows) == {"C1", "C2"}
    assert (rows["C1"]["active_devices"], rows["C1"]["push_enabled"], rows["C1"]["preferred_channel"]) == (
        "1", "false", "print",
    )  # fmt: skip
    assert (rows["C2"]["push_enabled"], rows["C2"]["preferred_channel"]) == ("true", "push")
