"""DSR platforms calling in — ``POST /v1/connectors/transcend`` (Transcend's server webhook,
authenticated by Sombra's ES384 token) and ``POST /v1/connectors/ketch`` (Ketch's DSR forwarder,
authenticated by the shared secret): checked, filed all or nothing (:mod:`sessionctl.connectors.filing`),
answered at once in the platform's shape. A forged, expired or replayed call is ``401`` with nothing
recorded. A connector whose settings are unset answers ``404``."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from sessionctl.config import Settings
from sessionctl.connectors import filing, identity, ketch, transcend
from sessionctl.connectors.filing import Filing, PlatformRequest
from sessionctl.connectors.replies import seal_reply
from sessionctl.connectors.sombra import SombraKeys
from sessionctl.errors import InvalidRequest, PlatformNotAuthenticated, PlatformUnavailable
from sessionctl.store import connector_requests

router = APIRouter(tags=["connectors"])
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "taken: the platform's answer"},
    400: {"description": "an action sessionctl does not perform"},
    401: {"description": "forged, expired or replayed: nothing recorded"},
    404: {"description": "this connector is not configured"},
    503: {"description": "Sombra unreachable (its key cannot be fetched): nothing recorded, send it again"},
    422: {"description": "a body the platform's contract does not allow"},
}


def _transcend_on(settings: Settings) -> bool:
    return bool(settings.transcend_sombra_url and settings.transcend_audience and settings.transcend_api_key)


def _sombra(request: Request) -> SombraKeys:
    state = request.app.state
    if getattr(state, "sombra", None) is None:
        state.sombra = SombraKeys(state.settings)
    keys: SombraKeys = state.sombra
    return keys


async def _file(request: Request, req: PlatformRequest, identities: list[tuple[str, str]]) -> Filing:
    """The platform request filed (or the one filed before under its platform id: nothing new)."""
    state = request.app.state
    async with state.connect() as conn:
        earlier = await filing.filed_before(conn, req)
        if earlier is not None and earlier["status"] == "open":  # sent again: the newest nonce answers it
            await connector_requests.set_reply(
                conn, earlier["id"], seal_reply(state.settings, earlier["id"], req.reply)
            )
    if earlier is not None:
        return Filing(earlier, new=False)
    ids: list[str] = []
    try:
        for value, kind in identities:
            ids.extend(await identity.user_ids(state.settings, value, kind))
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from None
    req.user_ids = list(dict.fromkeys(ids))
    async with state.connect() as conn:
        return await filing.file(conn, state.settings, req, state.producer.enqueue_as)


@router.post("/v1/connectors/transcend", responses=ANSWERS)
async def transcend_webhook(request: Request) -> Response:
    """Transcend's DSR webhook: ``200 {"status": "COMPILING"}`` (``ON_HOLD`` for a person under a
    legal hold), ``204`` when the identity mapping knows nobody by the identifier."""
    settings: Settings = request.app.state.settings
    if not _transcend_on(settings):
        raise HTTPException(
            404,
            "the Transcend connector is off: set SESSIONCTL_TRANSCEND_SOMBRA_URL, SESSIONCTL_TRANSCEND_AUDIENCE"
            " and SESSIONCTL_TRANSCEND_API_KEY",
        )
    try:
        verified = await _sombra(request).verify(request.headers.get("x-sombra-token"))
    except PlatformNotAuthenticated as exc:
        raise HTTPException(401, str(exc)) from None
    except PlatformUnavailable as exc:  # not the caller's fault: Transcend sends it again
        raise HTTPException(503, str(exc)) from None
    nonce = request.headers.get("x-transcend-nonce")
    if not nonce:
        raise HTTPException(400, "x-transcend-nonce is missing: Transcend sends it with every job")
    try:
        body = transcend.Webhook.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, f"not a Transcend webhook body: {_first(exc)}") from None
    kind = transcend.KINDS.get(body.type)
    if kind is None:
        raise HTTPException(
            400, f"sessionctl performs ERASURE and ACCESS, not {body.type[:64]!r}: enable only those on this data silo"
        )
    replay = verified.replay_key or "nonce:" + hashlib.sha256(nonce.encode()).hexdigest()
    profile = body.extras.model_extra.get("profile") if body.extras.model_extra else None
    id_type = str(profile.get("type")) if isinstance(profile, dict) and profile.get("type") else "coreIdentifier"
    req = PlatformRequest(
        platform="transcend",
        kind=kind,
        platform_ref=body.extras.request.id,
        replay_key=replay,
        identifier=verified.identifier,
        identifier_type=id_type,
        reply={"nonce": nonce},
        received_at=datetime.now(UTC),
    )
    await _refuse_replay(request, req, "x-sombra-token")
    filed = await _file(request, req, [(verified.identifier, id_type)])
    status = filed.row["status"]
    if status == "not_found":
        return Response(status_code=204)
    return JSONResponse({"status": "ON_HOLD" if status == "on_hold" else "COMPILING"})


async def _refuse_replay(request: Request, req: PlatformRequest, what: str) -> None:
    async with request.app.state.connect() as conn:
        if await filing.seen(conn, req) is not None:
            raise HTTPException(401, f"{what} was used before: a replayed call is refused, nothing was recorded")


@router.post("/v1/connectors/ketch", responses=ANSWERS)
async def ketch_request(request: Request) -> JSONResponse:
    """Ketch's ``DeleteRequest``/``AccessRequest`` (``dsr/v1``): the response at once; the status event
    to the request's callbacks when it ends. The same ``metadata.uid`` again gets the same answer."""
    settings: Settings = request.app.state.settings
    if settings.ketch_secret is None:
        raise HTTPException(404, "the Ketch connector is off: set SESSIONCTL_KETCH_SECRET")
    given = request.headers.get("authorization", "")
    want = settings.ketch_secret.get_secret_value()
    if not (
        hmac.compare_digest(given.encode(), want.encode())
        or hmac.compare_digest(given.encode(), f"Bearer {want}".encode())
    ):
        raise HTTPException(401, "Authorization is not the secret set in Ketch (SESSIONCTL_KETCH_SECRET)")
    try:
        body = ketch.DsrRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, f"not a Ketch dsr/v1 request: {_first(exc)}") from None
    kind = ketch.KINDS.get(body.kind)
    if kind is None:
        raise HTTPException(400, f"sessionctl performs DeleteRequest and AccessRequest, not {body.kind[:64]!r}")
    try:
        ketch.check_callbacks(body, settings.webhook_allowed_hosts)
    except InvalidRequest as exc:
        raise HTTPException(422, str(exc)) from None
    raw = _ketch_identities(settings, body)
    req = PlatformRequest(
        platform="ketch",
        kind=kind,
        platform_ref=body.metadata.uid,
        replay_key=f"uid:{body.metadata.uid}",
        identifier=raw[0][0],
        identifier_type=raw[0][1],
        reply={
            "metadata": body.metadata.model_dump(exclude_none=True),
            "callbacks": [c.model_dump() for c in body.request.callbacks],
        },
        received_at=_received(body.request.submittedTimestamp),
    )
    async with request.app.state.connect() as conn:
        known = await filing.seen(conn, req)
    if known is not None and known["kind"] != kind:
        raise HTTPException(409, "metadata.uid names a request of another kind: a uid means one request")
    filed = Filing(known, new=False) if known is not None else await _file(request, req, raw)
    return JSONResponse(_ketch_response(kind, body.metadata, filed.row))


def _ketch_identities(settings: Settings, body: ketch.DsrRequest) -> list[tuple[str, str]]:
    """(value, space) of the raw identities that identify the person here."""
    spaces = {s.strip() for s in settings.ketch_identity_spaces.split(",") if s.strip()}
    raw = [
        (i.identityValue, i.identitySpace)
        for i in body.request.identities
        if i.identityFormat == "raw" and (not spaces or i.identitySpace in spaces)
    ]
    if not raw:
        raise HTTPException(
            422, "no raw identity of the spaces SESSIONCTL_KETCH_IDENTITY_SPACES names: nothing identifies the person"
        )
    mapped = settings.identity_query or settings.identity_function
    if not mapped and len({space for _, space in raw}) > 1:
        raise HTTPException(
            422,
            "identities of several spaces and no identity mapping: set SESSIONCTL_KETCH_IDENTITY_SPACES to the space"
            " whose values are your user ids, or SESSIONCTL_IDENTITY_QUERY",
        )
    return raw


def _ketch_response(kind: str, metadata: ketch.Metadata, row: Any) -> dict[str, Any]:
    status, cid = row["status"], row["id"]
    if status == "not_found":
        return ketch.response(kind, metadata, "completed", connector_id=cid, reason="no_match")
    if status == "on_hold":
        return ketch.response(
            kind, metadata, "denied", connector_id=cid, resultMessage="the person is under a legal hold"
        )
    return ketch.response(kind, metadata, "in_progress", connector_id=cid)


def _received(submitted: int | None) -> datetime:
    """When the platform received the request (its own timestamp, if plausible)."""
    now = datetime.now(UTC)
    if submitted is None:
        return now
    when = datetime.fromtimestamp(submitted, UTC)
    return when if now - timedelta(days=3660) < when <= now + timedelta(minutes=5) else now


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"[:300]
