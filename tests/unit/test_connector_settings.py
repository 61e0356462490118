"""The connectors' settings and Ketch's identities, refused in one line before anything runs."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from sessionctl.api.routes_connectors import _ketch_identities
from sessionctl.config import Settings
from sessionctl.connectors import ketch

DSN = "postgresql://u@h/db"


@pytest.mark.parametrize("name", ["SESSIONCTL_KETCH_SECRET", "SESSIONCTL_TRANSCEND_API_KEY"])
def test_a_blank_or_short_platform_secret_is_refused_not_accepted(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, "  ")
    with pytest.raises(ValidationError, match="shorter than 16 characters"):
        Settings(database_url=DSN)


def test_the_sombra_url_is_a_url_without_its_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONCTL_TRANSCEND_SOMBRA_URL", "https://sombra.acme.io/")
    assert Settings(database_url=DSN).transcend_sombra_url == "https://sombra.acme.io"
    monkeypatch.setenv("SESSIONCTL_TRANSCEND_SOMBRA_URL", "sombra.acme.io")
    with pytest.raises(ValidationError, match="https://"):
        Settings(database_url=DSN)


def _request(*identities: tuple[str, str]) -> ketch.DsrRequest:
    return ketch.DsrRequest.model_validate(
        {
            "apiVersion": "dsr/v1",
            "kind": "DeleteRequest",
            "metadata": {"uid": "u1"},
            "request": {"identities": [{"identitySpace": s, "identityValue": v} for v, s in identities]},
        }
    )


def test_without_a_mapping_identities_of_several_spaces_are_refused() -> None:
    both = _request(("jane@x.io", "email"), ("1001", "customer_id"))
    with pytest.raises(HTTPException) as err:
        _ketch_identities(Settings(database_url=DSN), both)
    assert err.value.status_code == 422 and "several spaces" in str(err.value.detail)
    only_email = Settings(database_url=DSN, ketch_identity_spaces="email")
    assert _ketch_identities(only_email, both) == [("jane@x.io", "email")]
    mapped = Settings(database_url=DSN, identity_query="SELECT id FROM accounts WHERE key = $1")
    assert len(_ketch_identities(mapped, both)) == 2
    with pytest.raises(HTTPException):
        _ketch_identities(Settings(database_url=DSN, ketch_identity_spaces="phone"), both)
