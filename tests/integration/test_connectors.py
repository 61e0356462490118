"""The DSR-platform connectors end to end on real Postgres, Redis and a real worker, against
stand-ins of the platforms on 127.0.0.1 with real cryptography (tests/platforms.py): Transcend's
webhook (an ES384 token signed by a Sombra) and pull mode, Ketch's DSR forwarder; the identity
mapping (one email → two user ids), legal holds, forged/expired/replayed calls, a platform that is
down when the answer is due."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import jwt
import pytest
from pydantic import SecretStr

from sessionctl.config import Settings
from tests.agno_seed import seed
from tests.platforms import API_KEY, AUDIENCE, Sombra, ketch_body, new_key, transcend_body
from tests.service_helpers import Receiver, auth, dsr_service, make_token, running_worker, serving, until

EMAIL = "Jane.Doe@Example.com"  # the platform's identifier: never a user id here, never echoed
IDS = ["u-jane-app", "u-jane-legacy"]  # the user ids the operator's mapping finds for it


@pytest.fixture
async def platform(own_database: tuple[Settings, asyncpg.Connection]) -> AsyncIterator[dict[str, Any]]:
    """The DSR service with both connectors on, the identity mapping a SQL query over the test's own
    table, a Sombra stand-in, a Ketch callback receiver allowed as a host."""
    base, conn = own_database
    await conn.execute("CREATE TABLE people (email text, user_id text)")
    await conn.executemany("INSERT INTO people VALUES ($1, $2)", [(EMAIL, u) for u in IDS] + [("bob@x.io", "u-bob")])
    sombra, ketch = Sombra(), Receiver()
    async with serving(sombra) as sombra_url, serving(ketch) as ketch_url:
        update = {
            "transcend_sombra_url": sombra_url,
            "transcend_audience": AUDIENCE,
            "transcend_api_key": SecretStr(API_KEY),
            "ketch_secret": SecretStr("ketch-shared-secret"),
            "identity_query": "SELECT user_id FROM people WHERE email = $1 ORDER BY user_id",
            "webhook_allowed_hosts": "127.0.0.1",  # the receivers' ports are free ones
        }
        async with dsr_service(base, conn, **update) as svc:
            s = svc["settings"]
            for u in IDS:
                await seed(s.database_url, s.schema_for("support"), "support", u, 2)
            await seed(s.database_url, s.schema_for("support"), "support", "u-bob", 3)
            yield {**svc, "settings": s, "sombra": sombra, "ketch": ketch, "ketch_url": ketch_url}


async def _sessions(conn: asyncpg.Connection, user_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM ag_support.agno_sessions WHERE user_id = $1", user_id))


async def _connector_rows(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM sessionctl.connector_requests"))


async def _transcend(client: Any, token: str, nonce: str, kind: str, ref: str) -> Any:
    headers = {"x-sombra-token": token, "x-transcend-nonce": nonce}
    return await client.post("/v1/connectors/transcend", headers=headers, json=transcend_body(kind, ref))


async def test_a_transcend_erasure_erases_every_user_id_of_the_person_and_sombra_hears_it_once(
    platform: dict[str, Any],
) -> None:
    client, conn, sombra, s = platform["client"], platform["conn"], platform["sombra"], platform["settings"]
    token = sombra.token(EMAIL)
    resp = await _transcend(client, token, "nonce-1", "ERASURE", "tr-req-1")
    assert resp.status_code == 200 and resp.json() == {"status": "COMPILING"}, resp.text

    again = await _transcend(client, token, "nonce-1", "ERASURE", "tr-req-1")  # the same token replayed
    assert again.status_code == 401 and "used before" in again.text
    assert await _connector_rows(conn) == 1

    async with running_worker(s):
        answer = await until(lambda: sombra.answers_to("/v1/data-silo"), timeout=60)
    (put,) = answer
    assert put["headers"]["x-transcend-nonce"] == "nonce-1"
    assert put["headers"]["authorization"] == f"Bearer {API_KEY}" and json.loads(put["body"]) == {}
    for u in IDS:
        assert await _sessions(conn, u) == 0
    assert await _sessions(conn, "u-bob") == 3  # a bystander keeps everything
    row = await conn.fetchrow("SELECT * FROM sessionctl.connector_requests")
    assert row["status"] == "completed" and len(row["user_hmacs"]) == 2 and len(row["request_ids"]) == 2
    outcome = json.loads(row["outcome"])
    assert outcome["complete"] is True and len(outcome["receipts"]) == 2
    receipts = await conn.fetch(
        "SELECT user_hmac FROM sessionctl.receipts WHERE id = ANY($1::bigint[])", outcome["receipts"]
    )
    assert sorted(r["user_hmac"] for r in receipts) == sorted(row["user_hmacs"])  # every id erased, as HMACs
    refs = await conn.fetch("SELECT request_ref, status FROM sessionctl.dsr_requests ORDER BY request_ref")
    assert [(r["request_ref"], r["status"]) for r in refs] == [
        ("transcend:tr-req-1", "completed"),
        ("transcend:tr-req-1#2", "completed"),
    ]
    everything = b" ".join(g["body"] + json.dumps(g["headers"]).encode() for g in sombra.got)
    assert EMAIL.encode() not in everything and not any(u.encode() in everything for u in IDS)


async def test_forged_expired_or_foreign_tokens_are_refused_with_nothing_recorded(platform: dict[str, Any]) -> None:
    client, conn, sombra = platform["client"], platform["conn"], platform["sombra"]
    cases = {
        "forged": sombra.token(EMAIL, key=new_key()),
        "expired": sombra.token(EMAIL, ttl=-120),
        "another audience": sombra.token(EMAIL, audience="someone-else"),
        "not a token": "abc.def.ghi",
        "no expiry": jwt.encode({"value": EMAIL, "aud": AUDIENCE, "jti": "j1"}, sombra.key, algorithm="ES384"),
    }
    for name, token in cases.items():
        resp = await _transcend(client, token, f"nonce-{name}", "ERASURE", f"tr-{name}")
        assert resp.status_code == 401, (name, resp.text)
        assert EMAIL not in resp.text
    missing = await client.post("/v1/connectors/transcend", json=transcend_body("ERASURE", "tr-x"))
    assert missing.status_code == 401
    assert await _connector_rows(conn) == 0
    assert await conn.fetchval("SELECT count(*) FROM sessionctl.dsr_requests") == 0
    unsupported = await _transcend(client, sombra.token(EMAIL), "n-opt", "SALE_OPT_OUT", "tr-opt")
    assert unsupported.status_code == 400 and "ERASURE and ACCESS" in unsupported.text


async def test_sombra_rotates_its_key_and_the_next_token_verifies(
    platform: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, sombra = platform["client"], platform["sombra"]
    first = await _transcend(client, sombra.token("bob@x.io"), "n-a", "ACCESS", "tr-a")
    assert first.status_code == 200
    second = await _transcend(client, sombra.token("bob@x.io"), "n-b", "ACCESS", "tr-b")
    assert second.status_code == 200 and sombra.key_fetches == 1  # the key is kept
    sombra.key = new_key()  # Sombra's new signing key
    monkeypatch.setattr("sessionctl.connectors.sombra.REFETCH_S", 0.0)  # the last fetch is not "just now"
    third = await _transcend(client, sombra.token("bob@x.io"), "n-c", "ACCESS", "tr-c")
    assert third.status_code == 200, third.text
    assert sombra.key_fetches == 2


async def test_a_transcend_access_request_uploads_what_the_export_holds_in_pages_when_large(
    platform: dict[str, Any],
) -> None:
    client, conn, sombra, s = platform["client"], platform["conn"], platform["sombra"], platform["settings"]
    resp = await _transcend(client, sombra.token(EMAIL), "nonce-access", "ACCESS", "tr-acc")
    assert resp.status_code == 200
    small = s.model_copy(update={"transcend_inline_max_bytes": 1000})  # this export is larger: pages
    async with running_worker(small):
        pages = await until(
            lambda: [g for g in sombra.answers_to("/v1/datapoint-chunked") if json.loads(g["body"])["isLastPage"]],
            timeout=60,
        )
    assert pages
    sent = [json.loads(g["body"]) for g in sombra.answers_to("/v1/datapoint-chunked")]
    records = [r for page in sent for r in page["data"]]
    session_users = {r["session"]["user_id"] for r in records if "session" in r}
    assert session_users == set(IDS)  # the person's sessions under both ids, nobody else's
    assert all(g["headers"]["x-transcend-nonce"] == "nonce-access" for g in sombra.answers_to("/v1/datapoint-chunked"))
    assert [p["isLastPage"] for p in sent][-1] is True and not any(p["isLastPage"] for p in sent[:-1])
    assert await _sessions(conn, IDS[0]) == 2  # an access request erases nothing


async def test_a_person_under_legal_hold_is_not_erased_and_the_platform_is_told(platform: dict[str, Any]) -> None:
    client, conn, sombra, s = platform["client"], platform["conn"], platform["sombra"], platform["settings"]
    holder = await make_token(conn, "legal", ["hold"])
    placed = await client.post("/v1/holds", headers=auth(holder), json={"user_id": IDS[1], "reason": "litigation"})
    assert placed.status_code == 201 and IDS[1] not in placed.text
    resp = await _transcend(client, sombra.token(EMAIL), "nonce-held", "ERASURE", "tr-held")
    assert resp.status_code == 200 and resp.json() == {"status": "ON_HOLD"}
    assert await conn.fetchval("SELECT count(*) FROM sessionctl.dsr_requests") == 0

    # a hold placed after intake, before the worker runs: the erasure ends on_hold, Sombra is told
    bob = await _transcend(client, sombra.token("bob@x.io"), "nonce-bob", "ERASURE", "tr-bob")
    assert bob.status_code == 200 and bob.json() == {"status": "COMPILING"}
    assert (
        await client.post("/v1/holds", headers=auth(holder), json={"user_id": "u-bob", "reason": "audit"})
    ).status_code == 201
    async with running_worker(s):
        (put,) = await until(lambda: sombra.answers_to("/v1/data-silo"), timeout=60)
    assert (
        json.loads(put["body"])["status"] == "SKIPPED_DUE_TO_EXCEPTION"
        and put["headers"]["x-transcend-nonce"] == "nonce-bob"
    )
    assert await _sessions(conn, "u-bob") == 3 and await _sessions(conn, IDS[1]) == 2
    assert (
        await conn.fetchval("SELECT status FROM sessionctl.dsr_requests WHERE request_ref = 'transcend:tr-bob'")
        == "on_hold"
    )
    released = await client.post("/v1/holds/release", headers=auth(holder), json={"user_id": "u-bob"})
    assert released.status_code == 200 and released.json()["released_by"] == "legal"


async def test_a_sombra_that_is_down_gets_the_answer_later_with_one_event_id(platform: dict[str, Any]) -> None:
    client, sombra, s = platform["client"], platform["sombra"], platform["settings"]
    sombra.answers = [503, 503]
    resp = await _transcend(client, sombra.token("bob@x.io"), "nonce-down", "ERASURE", "tr-down")
    assert resp.status_code == 200
    async with running_worker(s):
        await until(lambda: len(sombra.answers_to("/v1/data-silo")) >= 3, timeout=60)
    tries = sombra.answers_to("/v1/data-silo")
    assert {t["headers"]["x-transcend-nonce"] for t in tries} == {"nonce-down"}
    assert len({t["headers"]["x-sessionctl-event-id"] for t in tries}) == 1


async def test_a_ketch_delete_request_is_answered_at_once_and_its_callback_gets_completed(
    platform: dict[str, Any],
) -> None:
    client, conn, ketch, s = platform["client"], platform["conn"], platform["ketch"], platform["settings"]
    body = ketch_body("DeleteRequest", "ketch-uid-1", EMAIL, f"{platform['ketch_url']}/callback")
    wrong = await client.post("/v1/connectors/ketch", headers={"Authorization": "guess"}, json=body)
    assert wrong.status_code == 401 and await _connector_rows(conn) == 0
    ok = {"Authorization": "ketch-shared-secret"}
    first = await client.post("/v1/connectors/ketch", headers=ok, json=body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["kind"] == "DeleteResponse" and answer["response"]["status"] == "in_progress"
    assert answer["metadata"] == {"uid": "ketch-uid-1", "tenant": "acme"}
    repeat = await client.post("/v1/connectors/ketch", headers=ok, json=body)  # Ketch retries: the same answer
    assert repeat.json()["response"]["requestID"] == answer["response"]["requestID"]
    assert await _connector_rows(conn) == 1
    outside = ketch_body("DeleteRequest", "ketch-uid-2", EMAIL, "https://evil.example/cb")
    refused = await client.post("/v1/connectors/ketch", headers=ok, json=outside)
    assert refused.status_code == 422 and await _connector_rows(conn) == 1

    async with running_worker(s):
        (event,) = await until(lambda: ketch.json_bodies(), timeout=60)
    assert event["kind"] == "DeleteStatusEvent" and event["metadata"]["uid"] == "ketch-uid-1"
    assert event["event"]["status"] == "completed" and event["event"]["reason"] == "executed"
    assert ketch.got[0]["headers"]["authorization"] == "ketch-callback-secret"
    assert [await _sessions(conn, u) for u in IDS] == [0, 0] and await _sessions(conn, "u-bob") == 3


async def test_transcend_pull_mode_files_pending_requests_and_answers_them(platform: dict[str, Any]) -> None:
    conn, sombra, s = platform["conn"], platform["sombra"], platform["settings"]
    holder = await make_token(conn, "legal-pull", ["hold"])
    held = await platform["client"].post("/v1/holds", headers=auth(holder), json={"user_id": IDS[0], "reason": "x"})
    assert held.status_code == 201
    sombra.pending["ERASURE"] = [
        {"identifier": "bob@x.io", "nonce": "pulled-nonce", "requestId": "tr-pulled"},
        {"identifier": EMAIL, "nonce": "held-nonce", "requestId": "tr-pulled-held"},
        "not an item",
        {"identifier": "nobody@x.io", "nonce": "nobody-nonce", "requestId": "tr-nobody"},
    ]
    pulling = s.model_copy(update={"transcend_data_silo_id": "silo-1", "transcend_pull_seconds": 5.0})
    async with running_worker(pulling):
        await until(lambda: len(sombra.answers_to("/v1/data-silo")) >= 3, timeout=60)
    put = {g["headers"]["x-transcend-nonce"]: json.loads(g["body"]) for g in sombra.answers_to("/v1/data-silo")}
    assert put["pulled-nonce"] == {} and put["nobody-nonce"] == {}  # erased; nobody here: nothing to erase
    assert put["held-nonce"]["status"] == "SKIPPED_DUE_TO_EXCEPTION"  # no response carried it: delivered
    assert await _sessions(conn, "u-bob") == 0 and await _sessions(conn, IDS[0]) == 2
    assert await _connector_rows(conn) == 3  # pulled again while they ran: each filed once


async def test_nobody_known_by_the_identifier_is_answered_204(platform: dict[str, Any]) -> None:
    client, conn, sombra = platform["client"], platform["conn"], platform["sombra"]
    resp = await _transcend(client, sombra.token("nobody@x.io"), "nonce-nobody", "ERASURE", "tr-nobody")
    assert resp.status_code == 204
    assert await conn.fetchval("SELECT status FROM sessionctl.connector_requests") == "not_found"


async def test_an_erasure_over_the_api_of_a_held_person_ends_on_hold_and_its_webhook_says_so(
    platform: dict[str, Any],
) -> None:
    client, conn, s, receiver = platform["client"], platform["conn"], platform["settings"], platform["receiver"]
    holder = await make_token(conn, "legal-api", ["hold"])
    assert (
        await client.post("/v1/holds", headers=auth(holder), json={"user_id": "u-bob", "reason": "x"})
    ).status_code == 201
    token = platform["tokens"]["all"]
    resp = await client.post(
        "/v1/erasures", headers=auth(token), json={"user_id": "u-bob", "callback_url": platform["hook"]}
    )
    assert resp.status_code == 202, resp.text
    async with running_worker(s):
        (body,) = await until(lambda: receiver.json_bodies(), timeout=60)
    assert body["event"] == "erasure.on_hold" and body["status"] == "on_hold" and "receipt_id" not in body
    row = (await client.get(f"/v1/requests/{resp.json()['request_id']}", headers=auth(token))).json()
    assert row["status"] == "on_hold" and row["completed_at"] is not None
    assert await _sessions(conn, "u-bob") == 3


async def test_an_access_export_gone_before_its_answer_is_reported_as_an_error(platform: dict[str, Any]) -> None:
    client, conn, sombra, s = platform["client"], platform["conn"], platform["sombra"], platform["settings"]
    sombra.answers = [503]  # Sombra is down at the first attempt
    resp = await _transcend(client, sombra.token("bob@x.io"), "nonce-gone", "ACCESS", "tr-gone")
    assert resp.status_code == 200
    async with running_worker(s):
        await until(lambda: sombra.answers_to("/v1/data-silo"), timeout=60)
        await conn.execute("UPDATE sessionctl.exports SET deleted_at = now(), deleted_by = 'expired'")
        await until(lambda: len(sombra.answers_to("/v1/data-silo")) >= 2, timeout=30)
    first, second = (json.loads(g["body"]) for g in sombra.answers_to("/v1/data-silo")[:2])
    assert first["status"] == "READY" and second["profileStatus"] == "ERROR" and "ExportGone" in second["message"]


async def test_a_sombra_that_cannot_be_reached_for_its_key_is_a_503_with_nothing_recorded(
    own_database: tuple[Settings, asyncpg.Connection],
) -> None:
    base, conn = own_database
    update = {
        "transcend_sombra_url": "http://127.0.0.1:9",  # nothing listens there
        "transcend_audience": AUDIENCE,
        "transcend_api_key": SecretStr(API_KEY),
    }
    async with dsr_service(base, conn, **update) as svc:
        resp = await _transcend(svc["client"], Sombra().token(EMAIL), "nonce-x", "ERASURE", "tr-x")
        assert resp.status_code == 503 and "unreachable" in resp.text, resp.text
        assert await _connector_rows(conn) == 0
