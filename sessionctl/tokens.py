"""API tokens of the DSR service (``sessionctl serve``): bearer tokens with scopes; only their
SHA-256 is stored (``sessionctl.api_tokens``), so a copy of the database holds no usable token."""

from __future__ import annotations

import hashlib
import re
import secrets

# read: the requests and jobs this token made; erase, export: make them; audit: every request and
# job, and the console (never an export's content: only the token that asked downloads it)
SCOPES = ("read", "erase", "export", "audit", "hold")
PREFIX = "sct_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def new_token() -> str:
    """A new token: ``sct_`` and 256 random bits, URL-safe."""
    return PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_scopes(text: str) -> list[str]:
    """``read,erase`` → the scopes, each known, in a stable order; raises ``ValueError``."""
    given = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in given if s not in SCOPES]
    if unknown or not given:
        raise ValueError(f"scopes must be a comma-separated subset of {', '.join(SCOPES)} (got {text!r})")
    return [s for s in SCOPES if s in given]


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError("a token name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    return name
