"""Agent ids, schema names and connection URIs: validated once, quoted always.

Identifiers are never formatted from input: an agent id becomes a schema name only through
:func:`schema_for_agent`, which checks it against a strict pattern, and reaches SQL only through
:func:`quote_ident`. A DSN is normalised here for each driver and redacted for display.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal
from urllib.parse import SplitResult, parse_qs, parse_qsl, quote, unquote, urlencode, urlsplit

from sessionctl.errors import InvalidConnectionURI, InvalidRequest

# xpander agent ids are UUIDs; we accept the wider, still safe, set of letters, digits, '-' and '_'.
AGENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PG_IDENT_MAX = 63  # bytes; Postgres truncates longer names silently, which could alias two agents
USER_ID_MAX = 1024
DEFAULT_SCHEMA_TEMPLATE = "ag_{agent}"


def validate_agent_id(agent_id: str) -> str:
    if not isinstance(agent_id, str) or not agent_id:
        raise InvalidRequest("agent id is empty: pass the agent's id, e.g. --agent 3f2c…")
    if len(agent_id) > PG_IDENT_MAX or not AGENT_ID_RE.fullmatch(agent_id):
        raise InvalidRequest(
            "agent id is not a valid agent id: use letters, digits, '-' and '_' only "
            f"(at most {PG_IDENT_MAX} characters, starting with a letter or digit)"
        )
    return agent_id


def validate_user_id(user_id: str) -> str:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidRequest("user id is empty: pass the id the agent stored sessions under, e.g. --user u-123")
    if len(user_id) > USER_ID_MAX:
        raise InvalidRequest(f"user id is longer than {USER_ID_MAX} characters")
    return storable_text(user_id, "user id")


def storable_text(value: str, what: str) -> str:
    """Text Postgres can store and every encoder can write: no NUL, no lone surrogate."""
    if "\x00" in value:
        raise InvalidRequest(f"{what} contains a NUL character, which Postgres cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} is not valid text (a lone surrogate, or bytes that are not UTF-8)") from None
    return value


# How ids whose spelling is ambiguous are treated where lists of ids enter (files, stdin, the
# producer's id lists): refused (the default), kept exactly as written, or stripped of surrounding
# whitespace. User ids are opaque: nothing is ever normalised without being asked.
Ambiguous = Literal["refuse", "keep", "strip"]
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp"})  # control, format (zero-width, BOM), line/paragraph separators


def ambiguity(user_id: str) -> str | None:
    """Why this id, read from a line, may not be what its writer meant (``None``: it is clear):
    surrounding whitespace (``"alice "`` is not ``alice``), or an invisible character."""
    if not user_id.strip():
        return "blank"
    if user_id != user_id.strip():
        return "leading or trailing whitespace"
    if user_id.isascii():  # most ids, without a lookup per character: ASCII's invisibles are its controls
        return None if user_id.isprintable() else "control or format characters"
    for ch in user_id:
        if unicodedata.category(ch) in _INVISIBLE:
            return "control or format characters"
    return None


def clean_ids(ids: list[str], ambiguous: Ambiguous, source: str, numbers: list[int] | None = None) -> list[str]:
    """Apply the ambiguity rule to a list of ids. ``source`` names the list in the error, which
    names each problem's line: ``numbers[i]`` for ``ids[i]``, else its 1-based position."""
    out: list[str] = []
    bad: dict[str, list[int]] = {}
    for n, raw in zip(numbers or range(1, len(ids) + 1), ids, strict=True):
        value = raw.strip() if ambiguous == "strip" else raw
        if ambiguous == "strip" and not value:
            continue  # a blank line, dropped as asked
        why = ambiguity(value)
        if why is not None and (ambiguous != "keep" or why == "blank"):
            bad.setdefault(why, []).append(n)
            continue
        out.append(value)
    if bad:
        raise InvalidRequest(f"{source}: {_where(bad)}; nothing was enqueued — {_FIX}")
    return out


_FIX = (
    "fix the list, or say how to read such ids (--ambiguous-ids, or ambiguous_ids= in the producer API):"
    " keep (exactly as written) or strip (surrounding whitespace removed)"
)


def _where(bad: dict[str, list[int]]) -> str:
    parts = []
    for why, lines in bad.items():
        shown = ", ".join(map(str, lines[:10])) + (f" and {len(lines) - 10} more" if len(lines) > 10 else "")
        parts.append(f"{'line' if len(lines) == 1 else 'lines'} {shown}: {why}")
    return "; ".join(parts)


def read_id_lines(data: bytes, *, source: str, ambiguous: Ambiguous = "refuse") -> list[str]:
    """User ids from a file or stdin: one per line, split on ``\n`` only (``\r\n`` is one line
    ending too), UTF-8, a leading BOM ignored, empty lines skipped. Every line must be a clear id
    (:func:`ambiguity`) unless ``ambiguous`` says how to read it; any problem refuses the whole
    input, naming the line numbers."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = data.split(b"\n")
    if lines and lines[-1] in (b"", b"\r"):
        lines.pop()
    texts: list[str] = []
    numbers: list[int] = []
    invalid: list[int] = []
    for n, raw in enumerate(lines, 1):
        raw = raw.removesuffix(b"\r")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            invalid.append(n)
            continue
        if text:
            texts.append(text)
            numbers.append(n)
    if invalid:
        raise InvalidRequest(f"{source}: {_where({'not valid UTF-8': invalid})}; nothing was enqueued")
    return clean_ids(texts, ambiguous, source, numbers)


def validate_schema(schema: str) -> str:
    if len(schema.encode()) > PG_IDENT_MAX or not SCHEMA_RE.fullmatch(schema):
        raise InvalidRequest(
            f"schema name is not a safe Postgres identifier: letters, digits and '_' only, at most {PG_IDENT_MAX} bytes"
        )
    return schema


def schema_for_agent(agent_id: str, template: str = DEFAULT_SCHEMA_TEMPLATE) -> str:
    """The agent's schema under the naming rule (xpander's by default: ``ag_`` + id with ``_``)."""
    validate_agent_id(agent_id)
    return validate_schema(template.format(agent=agent_id.replace("-", "_"), agent_id=agent_id))


def agent_for_schema(schema: str, template: str = DEFAULT_SCHEMA_TEMPLATE) -> str | None:
    """An agent id that names ``schema`` under the naming rule (``ag_demo_agent`` → ``demo_agent``:
    ``--agent demo_agent`` reaches it), or ``None`` when no agent id does."""
    field = "{agent}" if "{agent}" in template else "{agent_id}"
    prefix, _, suffix = template.partition(field)
    if "{" in prefix + suffix or not schema.startswith(prefix) or not schema.endswith(suffix):
        return None
    candidate = schema[len(prefix) : len(schema) - len(suffix)]
    try:
        return candidate if schema_for_agent(candidate, template) == schema else None
    except (InvalidRequest, KeyError, IndexError):
        return None


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL (the ``psycopg.sql.Identifier`` rule: double every ``"``).

    Names built from input are validated first (:func:`schema_for_agent`); names read from the
    catalog (``--all-agents`` discovery) may hold any character Postgres allows and are quoted as
    they are, so no agent schema is ever skipped for its spelling.
    """
    if not name or "\x00" in name or len(name.encode()) > PG_IDENT_MAX:
        raise InvalidRequest("not a Postgres identifier")
    return '"' + name.replace('"', '""') + '"'


def _normalise_query(parts: SplitResult, rest: str) -> str:
    """Move ``?dbname=`` / ``?database=`` into the path, so every driver connects to the same database:
    asyncpg takes the path and ignores ``dbname``, libpq (psycopg, Agno's driver) lets the query win.
    A database named both ways, differently, is refused."""
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    hosts = {v for k, v in pairs if k == "host"}
    if hosts and parts.hostname and hosts != {parts.hostname}:
        raise InvalidConnectionURI("database URI names the host twice (in the URL and in ?host=): name it once")
    named = [v for k, v in pairs if k in ("dbname", "database")]
    path_db = unquote(parts.path.lstrip("/"))
    if not named:
        return rest
    if len(set(named)) > 1 or (path_db and path_db != named[0]):
        raise InvalidConnectionURI(
            "database URI names the database twice (in the path and in ?dbname=/?database=): name it once"
        )
    query = urlencode([(k, v) for k, v in pairs if k not in ("dbname", "database")])
    return f"{parts.netloc}/{quote(named[0], safe='')}" + (f"?{query}" if query else "")


_ACCEPTED_SCHEMES = {
    "postgres",
    "postgresql",
    "postgresql+psycopg",
    "postgresql+psycopg_async",
    "postgresql+asyncpg",
    "postgresql+psycopg2",
}


@dataclass(frozen=True, slots=True)
class Dsn:
    """A Postgres connection URI, normalised. ``str()`` and ``repr()`` never show the password."""

    _raw: str  # the URI with the plain ``postgresql`` scheme

    @classmethod
    def parse(cls, uri: str) -> Dsn:
        if not isinstance(uri, str) or not uri.strip():
            raise InvalidConnectionURI("database URI is empty: set DATABASE_URL=postgresql://user@host:5432/db")
        uri = uri.strip()
        scheme, sep, rest = uri.partition("://")
        scheme = scheme.lower()
        if not sep:
            raise InvalidConnectionURI(
                "database URI cannot be parsed: expected postgresql://user:password@host:5432/dbname"
            )
        try:
            parts = urlsplit("postgresql://" + rest)
            _ = parts.port  # raises ValueError on a non-numeric port
        except ValueError as exc:
            raise InvalidConnectionURI(
                "database URI cannot be parsed: expected postgresql://user:password@host:5432/dbname"
            ) from exc
        if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
            # an unencoded '/', '?' or '#' in the password: the driver would read a wrong host
            raise InvalidConnectionURI(
                "database URI has a reserved character (/ ? # @) in its user or password: percent-encode it "
                "(e.g. / as %2F)"
            )
        rest = _normalise_query(parts, rest)
        if scheme not in _ACCEPTED_SCHEMES:
            raise InvalidConnectionURI(
                f"database URI scheme {scheme!r} is not supported: use postgresql:// "
                "(postgres://, postgresql+psycopg:// and postgresql+asyncpg:// are accepted too)"
            )
        if not urlsplit("postgresql://" + rest).hostname and "host=" not in parts.query:
            raise InvalidConnectionURI("database URI has no host: expected postgresql://user@host:5432/dbname")
        return cls("postgresql://" + rest)

    @property
    def asyncpg(self) -> str:
        """For asyncpg, which takes ``postgresql://``."""
        return self._raw

    @property
    def sqlalchemy_async(self) -> str:
        """For SQLAlchemy's async engine on psycopg 3 (what Agno's AsyncPostgresDb uses)."""
        return "postgresql+psycopg://" + self._raw.split("://", 1)[1]

    @property
    def sqlalchemy_sync(self) -> str:
        return self.sqlalchemy_async

    @property
    def redacted(self) -> str:
        parts = urlsplit(self._raw)
        netloc = parts.netloc
        if parts.password is not None:
            user = parts.username or ""
            host = netloc.rsplit("@", 1)[1]
            netloc = f"{user}:***@{host}"
        return f"postgresql://{netloc}{parts.path}"

    @property
    def target(self) -> tuple[str, str, int, str]:
        """(user, host, port, database) as the driver connects — query parameters (``?host=``,
        ``?dbname=``, …) win over the URL's parts. Two DSNs name the same database iff equal."""
        return _target(self._raw)

    @property
    def database(self) -> str:
        return self.target[3]

    @property
    def where(self) -> str:
        """``host[:port]/database``, for labels and messages (no user, no password)."""
        _, host, port, database = self.target
        return f"{host}{'' if port == 5432 else f':{port}'}/{database}"

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"Dsn({self.redacted!r})"


@functools.lru_cache(maxsize=256)
def _target(raw: str) -> tuple[str, str, int, str]:
    """:attr:`Dsn.target`, parsed once per URI: a job over thousands of agent schemas asks it of
    every target several times."""
    parts = urlsplit(raw)
    q = parse_qs(parts.query)

    def pick(*names: str, default: str) -> str:
        for n in names:
            if q.get(n):
                return q[n][0]
        return default

    user = pick("user", default=unquote(parts.username or ""))
    host = pick("host", default=parts.hostname or "")
    port = int(pick("port", default=str(parts.port or 5432)))
    database = pick("dbname", "database", default=unquote(parts.path.lstrip("/")) or user or "postgres")
    return user, host, port, database
