"""The README's screenshot tool (``exstream_push_dev.screenshots``): its command line, and the check that keeps
customer data out of the images. Taking the screenshots needs Chromium and a whole ``exstream-push up``, so that
is ``make screenshots``, not a test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from exstream_push.settings import PROJECT_ROOT
from exstream_push_dev.screenshots import ScreenshotError, check_private, customer_data


def test_the_command_explains_itself() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exstream_push_dev.screenshots", "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--out" in done.stdout and "exstream-push up" in done.stdout


def test_a_page_showing_customer_data_is_refused() -> None:
    private = customer_data(PROJECT_ROOT / "data", PROJECT_ROOT / "data" / "devices.csv")
    assert {"C00000001", "customer1@example.com", "STMT-2026-11-DEMO-D00000001"} <= private
    check_private("page.png", "statement-ready-52d6c567-794b-5762-9097-7e6a1c2df21f Completed sent 2084", private)
    with pytest.raises(ScreenshotError, match="customer data"):
        check_private("page.png", "failed for customer1@example.com", private)
