"""The 2.x demo dump is the tests' fixture, byte for byte; a logged exception leaves only its class."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from sessionctl import demo
from sessionctl.logs import configure_logging

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "agno-2.5.14-xpander-schema.sql"


def test_the_packaged_2x_demo_is_the_tests_fixture() -> None:
    assert demo.DUMP_2X.read_bytes() == FIXTURE.read_bytes()  # regenerate.sh writes both: they never drift apart


def test_a_logged_exception_is_its_class_never_its_text_or_traceback() -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    try:
        raise ValueError("invalid input for user alice@example.com")
    except ValueError:
        logging.getLogger("arq.worker").exception("job failed")
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["exc_type"] == "ValueError" and "alice" not in stream.getvalue()
    assert "Traceback" not in stream.getvalue() and "traceback object" not in stream.getvalue()
