"""The engine message file reader: every layout we may meet, and nothing that makes it stop."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from exstream_push.message_file import parse_line, parse_messages, read_message_file


@pytest.mark.parametrize(
    ("line", "level", "timestamp", "code", "text"),
    [
        (
            "11/29/2026 06:41:17 WARNING  12 customers with missing optional fields",
            "WARNING",
            datetime(2026, 11, 29, 6, 41, 17),
            None,
            "12 customers with missing optional fields",
        ),
        (
            "11/29/2026 06:12:03 ERROR  PRT-0417 Print queue PDF rejected document D1",
            "ERROR",
            datetime(2026, 11, 29, 6, 12, 3),
            "PRT-0417",
            "Print queue PDF rejected document D1",
        ),
        ("SEVERE (E0101): Engine aborted", "SEVERE", None, "E0101", "Engine aborted"),
        ("ERROR: e0456 - SMTP relay refused", "ERROR", None, "E0456", "SMTP relay refused"),
        ("[Error] Font Arial not found", "ERROR", None, None, "Font Arial not found"),
        ("Error: out of memory", "ERROR", None, None, "out of memory"),
        ("FATAL engine crashed", "SEVERE", None, None, "engine crashed"),
        ("WARN  slow disk", "WARNING", None, None, "slow disk"),
        ("1/5/2026 6:00:01 PM INFO Engine started", "INFO", datetime(2026, 1, 5, 18, 0, 1), None, "Engine started"),
        (
            "11/29/2026 06:00:01.250 - ERROR - DOC1102W rejected",
            "ERROR",
            datetime(2026, 11, 29, 6, 0, 1, 250_000),
            "DOC1102W",
            "rejected",
        ),
        ("\ufeff11/29/2026 06:00:01 INFO  Engine started", "INFO", datetime(2026, 11, 29, 6, 0, 1), None, None),
        ("ERROR 12 customers failed", "ERROR", None, None, "12 customers failed"),  # a count is not a code
        ("Error count: 0", None, None, None, "Error count: 0"),  # a sentence, not a level
        ("Reading driver file", None, None, None, "Reading driver file"),
        ("13/45/2026 25:61:61 ERROR impossible date", "ERROR", None, None, "impossible date"),
        ("ERROR", "ERROR", None, None, ""),
    ],
)
def test_parse_line_layouts(
    line: str, level: str | None, timestamp: datetime | None, code: str | None, text: str | None
) -> None:
    message = parse_line(line, 7)
    assert message.line_number == 7
    assert message.level == level
    assert message.timestamp == timestamp
    assert message.code == code
    if text is not None:
        assert message.text == text
    assert message.is_error == (level in ("ERROR", "SEVERE"))


def test_noise_never_raises() -> None:
    for line in ["\x00\x01\x02\xff", "////", "ERROR\t", ":", "12/12/2026", "   \t ", "x" * 50_000, "[", "(E1)"]:
        message = parse_line(line)
        assert len(message.text) <= 4_000


def test_continuation_lines_fold_into_the_message_they_follow() -> None:
    lines = [
        "11/29/2026 06:00:01 INFO  Engine started\n",
        "11/29/2026 06:12:03 ERROR  PRT-0417 Print queue rejected\r\n",
        "    document D-000123\n",
        "\tcustomer C0042\n",
        "\n",
        "banner without a level\n",
        "  indented banner\n",  # follows a level-less line: its own noise, not a continuation
        "SEVERE E0101 Engine aborted",
    ]
    messages = list(parse_messages(lines))
    assert [m.level for m in messages] == ["INFO", "ERROR", None, None, "SEVERE"]
    assert messages[1].text == "Print queue rejected document D-000123 customer C0042"
    assert messages[1].line_number == 2
    assert messages[3].line_number == 7
    assert messages[4].code == "E0101"


def test_read_message_file_survives_other_encodings_and_line_endings(tmp_path: Path) -> None:
    path = tmp_path / "ExstreamMessages.dat"
    path.write_bytes(
        "11/29/2026 06:00:01 INFO Démarrage\r\n".encode("latin-1")
        + b"11/29/2026 06:00:02 ERROR E0456 SMTP relay refused\r"
        + b"\xff\xfe garbage \x00\n"
        + b"SEVERE E0101 aborted"
    )
    messages = list(read_message_file(path))
    assert [m.level for m in messages] == ["INFO", "ERROR", None, "SEVERE"]
    assert [m.line_number for m in messages if m.is_error] == [2, 4]
