"""Device CSV import: upsert by device_id, bad rows reported with line numbers, good rows kept."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from exstream_push.cli import main
from exstream_push.ledger import Device
from exstream_push.runtime import ledger_for
from exstream_push.settings import get_settings

GOOD_AND_BAD = """customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories
C1,d1,android,tok-1,true,en,Europe/London,
C1,d2,ios,tok-2,false,fr,Europe/Paris,statements; bills
C2,d3,fax,tok-3,true,en,Europe/London,
C3,d4,web,,true,en,Europe/London,
C4,d5,web,tok-5,maybe,en,Europe/London,
C5,d6,web,tok-6,true,en,Mars/Olympus,
C6,d7,web,tok-7,true,en,UTC,,extra
"""


@pytest.fixture
def ledger_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")


def _devices() -> dict[str, Device]:
    with ledger_for(get_settings()).engine.connect() as conn:
        return {row.device_id: row for row in conn.execute(select(Device.__table__))}


def test_import_reports_bad_rows_by_line_and_keeps_good_ones(
    ledger_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(GOOD_AND_BAD)
    assert main(["devices", "import", str(path)]) == 0
    captured = capsys.readouterr()
    assert "imported 2 device(s), skipped 5 bad row(s)" in captured.out
    for line, words in [(4, "platform"), (5, "token is empty"), (6, "push_opt_in"), (7, "time zone"), (8, "more")]:
        assert f"devices.csv:{line}: skipped:" in captured.err
        assert words in next(e for e in captured.err.splitlines() if f":{line}:" in e)
    devices = _devices()
    assert set(devices) == {"d1", "d2"}
    assert devices["d2"].categories == "bills;statements" and devices["d2"].push_opt_in is False
    assert main(["devices", "import", str(path), "--strict"]) == 1


def test_reimport_upserts_and_reactivates(ledger_env: None, tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text(
        "customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories\nC1,d1,android,a,true,,,\n"
    )
    assert main(["devices", "import", str(path)]) == 0
    ledger_for(get_settings()).deactivate_devices(["d1"], "fcm:UNREGISTERED")
    assert _devices()["d1"].active is False
    path.write_text(
        "customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories\nC1,d1,ios,b,true,,,\n"
    )
    assert main(["devices", "import", str(path)]) == 0
    device = _devices()["d1"]
    assert (device.platform, device.token, device.active) == ("ios", "b", True)


def test_missing_header_is_a_clear_error(ledger_env: None, tmp_path: Path) -> None:
    path = tmp_path / "devices.csv"
    path.write_text("customer,device\nC1,d1\n")
    with pytest.raises(ValueError, match="header lacks"):
        main(["devices", "import", str(path)])


def test_over_long_ids_are_bad_rows_on_every_backend(
    monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXSTREAM_PUSH_HOME", str(tmp_path))
    monkeypatch.setenv("EXSTREAM_PUSH_DATABASE_URL", database_url)
    long = "".join(hashlib.sha256(b"%d" % n).hexdigest() for n in range(47))[:3_000]  # incompressible
    path = tmp_path / "devices.csv"
    path.write_text(
        "customer_id,device_id,platform,token,push_opt_in,locale,timezone,categories\n"
        "C1,d1,android,tok-1,true,en,UTC,\n"
        f"C2,{long},android,tok-2,true,en,UTC,\n"
        f"{long},d3,android,tok-3,true,en,UTC,\n"
    )
    assert main(["devices", "import", str(path)]) == 0
    captured = capsys.readouterr()
    assert "imported 1 device(s), skipped 2 bad row(s)" in captured.out
    assert "devices.csv:3: skipped: device_id is longer than 256 characters" in captured.err
    assert "devices.csv:4: skipped: customer_id is longer than 256 characters" in captured.err
    assert long not in captured.out + captured.err
    assert set(_devices()) == {"d1"}
