"""An export's pages, read ahead on spare connections while the page before is still rendering.

Postgres renders an export's lines (``store.export_lines``) on one backend: read one page at a
time, an export runs at the pace of one CPU of the database, with the worker idle between pages.
Each page here starts by finding where it ends (``store.export_page_end``: one index probe, in the
page's own snapshot), and as soon as that key is known the next page is started on another
connection — up to ``readers`` pages at once. Lines still reach the file in order: pages are handed
out in the order they were started.

A page is exactly what the one-page-at-a-time keyset walk would read: the sessions after the
previous page's last key, ``limit`` of them, in one repeatable-read snapshot (the probe and the page
share it).

Only the page the writer needs next waits for a connection. A page read ahead takes a *spare* one
(:meth:`Databases.spare`: free now, and no job waiting) or is not read ahead: the writer reads it
itself when its turn comes. A connection goes back to the pool after each page, so another job
never waits for more than one page of this one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from jobs.targets import Target
from sessionctl import store
from sessionctl.databases import Databases

# Renders a page's rows as export lines, in the page's transaction (Agno's merge for the few
# sessions Postgres left to it).
Render = Callable[[Any, Target, list[Any]], Awaitable[list[bytes]]]

# Pages stop finding their end first once that probe costs more than this share of reading the
# page itself: the read-ahead would then cost the database more work than it saves time.
PROBE_SHARE = 0.25


class PageReader:
    """``async with PageReader(...) as pages: while (lines := await pages.next()) is not None``."""

    def __init__(
        self,
        databases: Databases,
        target: Target,
        window: store.Window,
        *,
        envelope: dict[str, Any],
        limit: int,
        readers: int,
        render: Render,
    ) -> None:
        self._dbs = databases
        self._target = target
        self._window = window
        self._envelope = envelope
        self._limit = limit
        self._readers = max(1, readers)
        self._render = render
        self._start: store.SessionKey | None = None  # where the next page not yet started begins
        self._start_known = True  # False while the page before is still finding its end
        self._last_started = False  # the page started last is the window's last
        self._flight: deque[tuple[asyncio.Task[list[bytes] | None], store.SessionKey | None]] = deque()
        self._reading = 0  # pages being read now
        self.probing = self._readers > 1  # pages find their end first (so the next can start)
        self.read_ahead = 0  # pages read on a spare connection (for the log and tests)

    async def __aenter__(self) -> PageReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [task for task, _ in self._flight]
        self._flight.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:  # their own errors do not matter any more
            with contextlib.suppress(BaseException):
                await task

    async def next(self) -> list[bytes] | None:
        """The next page's lines, in order; ``None`` when the window is exhausted."""
        self._fill()
        if not self._flight:
            return None
        task, start = self._flight.popleft()
        lines = await task
        if lines is None:  # started ahead, but no connection was spare: read it now
            lines = await self._read(start, ahead=False)
            assert lines is not None
        return lines

    def _fill(self) -> None:
        while self._start_known and not self._last_started and len(self._flight) < self._readers:
            start = self._start
            self._start_known = False
            # Only the page the writer waits for may wait for a connection: a page started while
            # another is being read is ahead.
            task = asyncio.create_task(self._read(start, ahead=self._reading > 0 or bool(self._flight)))
            self._flight.append((task, start))

    def _ends_at(self, end: store.SessionKey | None) -> None:
        """The page being read ends at ``end`` (``None``: it is the last): start the next one."""
        self._start, self._start_known, self._last_started = end, True, end is None
        self._fill()

    async def _read(self, start: store.SessionKey | None, *, ahead: bool) -> list[bytes] | None:
        dsn = self._target.dsn
        connect = self._dbs.spare(dsn) if ahead else self._dbs.connect(dsn)
        self._reading += 1
        try:
            async with connect as conn:
                if conn is None:
                    return None
                if ahead:
                    self.read_ahead += 1
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    if self.probing:
                        return await self._probed_page(conn, start)
                    rows = await self._page(conn, start, None)
                    lines = await self._render(conn, self._target, rows)
        finally:
            self._reading -= 1
        # not probed: where this page ends is known only now (a full page may not be the last)
        full = len(rows) == self._limit
        self._ends_at((int(rows[-1]["created_at"]), str(rows[-1]["session_id"])) if full else None)
        return lines

    async def _probed_page(self, conn: Any, start: store.SessionKey | None) -> list[bytes]:
        t0 = time.monotonic()
        end = await store.export_page_end(conn, self._target.layout, self._window, after=start, limit=self._limit)
        t1 = time.monotonic()
        self._ends_at(end)  # the next page starts now, on another connection
        rows = await self._page(conn, start, end)
        if end is not None and t1 - t0 > PROBE_SHARE * (time.monotonic() - t1):
            # Finding the end costs nearly as much as reading the page (no index for this order:
            # the probe scans what the page scans): read one page at a time from here on.
            self.probing = False
        return await self._render(conn, self._target, rows)

    async def _page(self, conn: Any, start: store.SessionKey | None, end: store.SessionKey | None) -> list[Any]:
        return await store.export_lines(
            conn, self._target.layout, self._window, envelope=self._envelope, after=start, upto=end, limit=self._limit
        )
