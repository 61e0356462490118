"""Agno's SQLite and MySQL session databases (``SqliteDb``, ``MySQLDb``): sessions, runs, memories
and every other table with a ``user_id`` column, as in an agent schema in Postgres — plus, in a
SQLite file, AgentFS's ``agno_fs`` and AgentOS's login records. The statements are
:mod:`sessionctl.store.sql_dbs`; one transaction erases the person from the whole database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sessionctl.backends.agentfs import check_templates, resolved
from sessionctl.backends.base import Backend, Person, chunks, jsonable, needs
from sessionctl.errors import StoreMisdeclared, StoreUnreachable, UnknownUserData
from sessionctl.store import sql_dbs
from sessionctl.store.tables import SESSIONS


class SqlBackend(Backend):
    holds_runs = True
    expires = True
    dialect = "sqlite"

    def _open(self) -> None:
        sqlalchemy = needs("sqlalchemy", self.label, self.dialect)
        check_templates(self.label, getattr(self.decl, "templates", []))
        self.engine = sqlalchemy.create_engine(self._url(), pool_pre_ping=True)
        if self.dialect == "sqlite":  # deleted rows overwritten, not left readable in free pages
            sqlalchemy.event.listen(self.engine, "connect", _secure_delete)
        try:
            with self.engine.connect() as conn:
                self.layout = sql_dbs.read_layout(conn, self.dialect, self._schema(), self.decl.tables())
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StoreUnreachable(f"{self.label}: {self.dialect} did not answer ({_why(exc)})") from None
        if not self.layout.has(SESSIONS):
            table = self.layout.names.get(SESSIONS, SESSIONS)
            raise StoreMisdeclared(
                f"{self.label}: no {table} table there: not an Agno database, or another session_table"
                " (sessionctl never creates one)"
            )
        unknown = self.layout.unknown()
        if unknown:
            raise UnknownUserData(
                f"{self.label}: table(s) {', '.join(unknown)} hold a user_id column sessionctl has no rule for;"
                ' name Agno\'s table argument for each in the store (e.g. memory_table = "…"), or remove them'
            )

    def _url(self) -> str:
        raise NotImplementedError

    def _schema(self) -> str | None:
        return None

    def _close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.dispose()

    def _namespaces(self, users: list[str]) -> list[str]:
        """The AgentFS namespaces of the declared templates, resolved for the users."""
        found = (resolved(t, u) for t in getattr(self.decl, "templates", []) for u in users)
        return [n for n in found if n is not None]

    def _count(self, person: Person) -> int:
        with self.engine.connect() as conn:
            n = sum(sum(sql_dbs.count_person(conn, self.layout, part).values()) for part in chunks(person.users))
            return n + sql_dbs.namespace_files(conn, self.layout, self._namespaces(person.users))

    def _erase(self, person: Person) -> int:
        found = self._count(person)
        if found:
            with self.engine.begin() as conn:  # one transaction: the person, or nothing
                for part in chunks(person.users):
                    sql_dbs.erase_person(conn, self.layout, part)
                sql_dbs.namespace_files(conn, self.layout, self._namespaces(person.users), erase=True)
        if self.dialect == "sqlite":  # on every try: the old pages live on in the write-ahead log until then
            with self.engine.connect() as conn:
                busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            if busy is not None and busy[0]:
                raise StoreUnreachable(
                    f"{self.label}: a reader holds the SQLite file open, so the erased rows' old pages are still in"
                    " its write-ahead log; retried"
                )
        return found

    def _rows(self, user: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            found = sql_dbs.person_rows(conn, self.layout, user)
            found += sql_dbs.namespace_rows(conn, self.layout, self._namespaces([user]))
        return [{"table": r["table"], "row": {k: jsonable(v) for k, v in r["row"].items()}} for r in found]

    def _owners(self) -> list[tuple[str, int]]:
        with self.engine.connect() as conn:
            return list(sql_dbs.owners(conn, self.layout).items())

    def _expire(self, cutoff: int, dry_run: bool, keep: list[str]) -> tuple[int, int]:
        """Sessions (with their runs) and memories last updated, else created, before ``cutoff``;
        none of the users of ``keep``."""
        with self.engine.connect() as conn:
            found = sql_dbs.count_expired(conn, self.layout, cutoff, keep)
        if dry_run or not found:
            return found, found
        with self.engine.begin() as conn:
            deleted = sql_dbs.delete_expired(conn, self.layout, cutoff, keep)
        with self.engine.connect() as conn:
            return deleted, sql_dbs.count_expired(conn, self.layout, cutoff, keep)

    async def run_ids(self, users: list[str]) -> set[str]:
        return await self.call(self._run_ids, users)

    def _run_ids(self, users: list[str]) -> set[str]:
        with self.engine.connect() as conn:
            return set().union(*(sql_dbs.run_ids(conn, self.layout, part) for part in chunks(users)))


class SqliteBackend(SqlBackend):
    dialect = "sqlite"

    def _url(self) -> str:
        file = Path(self.decl.file())
        if not file.is_file():
            raise StoreMisdeclared(f"{self.label}: no SQLite file at {file} (sessionctl never creates one)")
        return f"sqlite:///{file}"


class MySqlBackend(SqlBackend):
    dialect = "mysql"

    def _url(self) -> str:
        needs("pymysql", self.label, "mysql")
        return str(self.decl.db_url.get_secret_value())

    def _schema(self) -> str | None:
        return str(self.decl.db_schema)


def _why(exc: Exception) -> str:
    """A database error as its class and code, never its text (it may quote a URL or a row)."""
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "args", [None])[0] if orig is not None else None
    return f"{type(orig or exc).__name__}{f' {code}' if isinstance(code, int) else ''}"


def _secure_delete(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA secure_delete = ON")
    cursor.close()
