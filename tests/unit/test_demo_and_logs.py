"""The shipped 2.x dump is the layout xpander writes; a logged exception leaves only its class."""

from __future__ import annotations

import io
import json
import logging

from sessionctl import demo
from sessionctl.logs import configure_logging, get_logger


def test_the_shipped_2x_dump_keeps_runs_inside_the_session_rows() -> None:
    sql = demo.DUMP_2X.read_text(encoding="utf-8")
    assert f"CREATE TABLE {demo.DUMP_SCHEMA}.agno_sessions" in sql and "agno_runs" not in sql  # runs in the row
    sessions = [line for line in sql.splitlines() if line.startswith(f"INSERT INTO {demo.DUMP_SCHEMA}.agno_sessions")]
    assert len(sessions) == 5 and all('"run_id"' in line for line in sessions)
    assert {u for u in demo.DUMP_USERS if any(f"'{u}'" in line for line in sessions)} == set(demo.DUMP_USERS)


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


def test_a_logger_follows_the_configuration_it_is_used_under() -> None:
    """get_logger's loggers bind once per configuration, not once for good: configured again
    (another level, another stream), a logger made before logs by the new configuration."""
    log = get_logger("sessionctl.test")
    quiet, loud = io.StringIO(), io.StringIO()
    configure_logging("json", "WARNING", stream=quiet)
    log.info("dropped")
    log.warning("kept", n=1)
    configure_logging("json", "INFO", stream=loud)
    log.info("now kept")
    log.bind(job="j1").info("bound")
    assert [json.loads(x)["event"] for x in quiet.getvalue().splitlines()] == ["kept"]
    events = [json.loads(x) for x in loud.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["now kept", "bound"] and events[1]["job"] == "j1"
