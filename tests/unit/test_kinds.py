"""The registry of job kinds is the one list: the worker serves exactly its kinds, the ledger's
request kinds are among them, and the CLI, the API and the index take exactly its names."""

from __future__ import annotations

from typing import get_args

from sessionctl import ledger
from sessionctl.config import Settings
from sessionctl.jobs.fields import KindName
from sessionctl.jobs.kinds import KINDS, NAMES
from sessionctl.jobstate import JOB_STATES, STATUS_FILTERS, StatusFilter
from sessionctl.worker.settings import build_worker_settings


def test_the_worker_serves_exactly_the_registered_kinds() -> None:
    settings = Settings(hash_key="k" * 20, queue_name="unit:kinds")
    served = {f.name: f for f in build_worker_settings(settings).functions}
    assert set(served) == set(NAMES)
    for name, kind in KINDS.items():
        assert served[name].timeout_s == kind.timeout(settings)


def test_the_kinds_that_serve_requests_are_the_ledgers() -> None:
    assert set(ledger.JOB_KIND.values()) == {name for name, k in KINDS.items() if k.serves_requests}
    assert {name for name, k in KINDS.items() if k.retry} == set(ledger.JOB_KIND.values())


def test_one_list_of_job_states() -> None:
    assert set(STATUS_FILTERS) == {*JOB_STATES, "ended"}
    assert STATUS_FILTERS["ended"] == {"succeeded", "dry_run", "partial", "failed"}


def test_the_clis_choices_are_the_registry_and_the_states() -> None:
    assert get_args(KindName) == NAMES
    assert get_args(StatusFilter) == tuple(STATUS_FILTERS)


def test_jobs_kind_and_status_are_choices_in_the_cli() -> None:
    from typer.testing import CliRunner

    from sessionctl.cli import app

    shown = CliRunner().invoke(app, ["jobs", "--help"]).output
    assert "--kind <" + "|".join(NAMES) + ">" in " ".join(shown.split()), shown
    refused = CliRunner().invoke(app, ["jobs", "--kind", "purge"])
    assert refused.exit_code == 2 and refused.stdout == "", refused.output
    assert refused.stderr.startswith("error: invalid value for '--kind': 'purge' is not one of 'purge_user_sessions'")
    assert refused.stderr.count("\n") == 1 and refused.stderr.endswith("(see root jobs --help)\n"), refused.stderr
