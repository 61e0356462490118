"""Legal holds over HTTP (the ``hold`` scope): place one on a person, release it, list them. The
person comes in a POST body and leaves only as an HMAC."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Security

from sessionctl.api.auth import ERRORS, Caller, need
from sessionctl.api.models import HoldIn, HoldRelease
from sessionctl.privacy import user_hmac
from sessionctl.store import legal_holds

router = APIRouter(tags=["holds"])
Holder = Annotated[Caller, Security(need("hold"))]


def hold_out(r: Any) -> dict[str, Any]:
    return {
        "hold_id": r["id"],
        "user_hmac": r["user_hmac"],
        "reason": r["reason"],
        "placed_by": r["placed_by"],
        "placed_at": r["placed_at"].isoformat(),
        "released_at": None if r["released_at"] is None else r["released_at"].isoformat(),
        "released_by": r["released_by"],
    }


@router.post("/v1/holds", status_code=201, responses={**ERRORS, 200: {"description": "already held"}})
async def place(body: HoldIn, request: Request, who: Holder) -> dict[str, Any]:
    """Place a legal hold: the person's erasures end ``on_hold`` (nothing erased) and retention keeps
    everything of theirs until it is released."""
    state = request.app.state
    key = state.settings.hash_key_bytes
    person = user_hmac(key, body.user_id)
    async with state.connect() as conn:
        row, new = await legal_holds.place(
            conn, person, legal_holds.seal(key, person, body.user_id), body.reason, who.name
        )
    return {**hold_out(row), "placed_now": new}


@router.post("/v1/holds/release", responses={**ERRORS, 404: {"description": "no hold on this person"}})
async def release(body: HoldRelease, request: Request, who: Holder) -> dict[str, Any]:
    """Release the person's hold (it stays listed, with who released it and when)."""
    state = request.app.state
    async with state.connect() as conn:
        row = await legal_holds.release(conn, user_hmac(state.settings.hash_key_bytes, body.user_id), who.name)
    if row is None:
        raise HTTPException(404, "this person is under no hold")
    return hold_out(row)


@router.get("/v1/holds", responses=ERRORS)
async def holds(
    request: Request, who: Holder, released: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> dict[str, Any]:
    """Holds in place (``released=true``: released ones too), newest first."""
    async with request.app.state.connect() as conn:
        rows = await legal_holds.listing(conn, include_released=released, limit=limit)
    return {"holds": [hold_out(r) for r in rows]}
