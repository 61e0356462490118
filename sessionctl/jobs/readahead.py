"""An export's pages, read ahead on spare connections while the page before is still rendering.

Postgres renders an export's lines (``store.export_lines``) on one backend: read one page at a
time, an export runs at the pace of one CPU of the database, with the worker idle between pages.
Each page here starts by finding where it ends (``store.export_page_end``: one index probe, in the
page's own snapshot), and as soon as that key is known the next page is started on another
connection — up to ``readers`` pages at once. Lines still reach the file in order: pages are handed
out in the order they were started.

A page is exactly what the one-page-at-a-time keyset walk would read: the sessions after the
previous page's last key, ``limit`` of them, in one repeatable-read snapshot (the probe and the page
share it). Sessions without a creation time come last, in session id order (a walk of their own).

At most ``readers`` pages are read or waited for at once (the one the writer waits for included),
so an export holds ``readers`` + 2 pages at most: those, the one handed out that waits for the
write before it, and the one being written. Where the probe costs more than ``PROBE_SHARE`` of its
page twice in a row (no index serves the order), pages are read one at a time from there on.

Only the page the writer needs next waits for a connection. A page read ahead takes a *spare* one
(:meth:`Databases.spare`: free now, and no job waiting) or is not read ahead: the writer reads it
itself when its turn comes. A connection goes back to the pool after each page, so another job
never waits for more than one page of this one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from sessionctl import store
from sessionctl.databases import Databases
from sessionctl.jobs.targets import Target

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
        # Sessions without a creation time are walked apart, last, by session id: with them in
        # the same walk, no index could bound a page's scan.
        self._walks = deque(
            [dataclasses.replace(window, undated=False), dataclasses.replace(window, undated=True)]
            if target.layout.created_at_nullable
            else [window]
        )
        self._window = self._walks.popleft()
        self._envelope = envelope
        self._limit = limit
        self._readers = max(1, readers)
        self._render = render
        self._start: store.ExportKey | None = None  # where the next page not yet started begins
        self._start_known = True  # False while the page before is still finding its end
        self._last_started = False  # the page started last is the window's last
        self._flight: deque[tuple[asyncio.Task[list[bytes] | None], store.ExportKey | None]] = deque()
        self._reading = 0  # pages being read now
        self._awaited = 0  # a page taken from the flight that the writer still waits for
        self._dear_probes = 0  # pages in a row whose probe cost more than PROBE_SHARE
        self._warm: set[int] = set()  # backends that ran a probe already (the first one plans it)
        self.probing = self._readers > 1  # pages find their end first (so the next can start)
        self.read_ahead = 0  # pages read on a spare connection (for the log and tests)

    async def __aenter__(self) -> PageReader:
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [task for task, _ in self._flight]
        self._flight.clear()
        for task in tasks:
            task.cancel()
        # their own errors do not matter any more; a cancellation of ours still does
        await asyncio.gather(*tasks, return_exceptions=True)

    async def next(self) -> list[bytes] | None:
        """The next page's lines, in order (never empty); ``None`` when the window is exhausted."""
        while True:
            lines = await self._next()
            if lines:
                return lines
            if lines is None:  # this walk is over: the next one, if any
                if not self._walks:
                    return None
                self._window = self._walks.popleft()
                self._start, self._start_known, self._last_started = None, True, False
            # else a page that came back empty (the walk ended exactly on the page before)

    async def _next(self) -> list[bytes] | None:
        self._fill()
        if not self._flight:
            return None
        task, start = self._flight.popleft()
        self._awaited = 1  # still counted against the readers: no page more in memory
        try:
            lines = await task
            if lines is None:  # started ahead, but no connection was spare: read it now
                lines = await self._read(start, ahead=False)
                assert lines is not None
        finally:
            self._awaited = 0
        return lines

    def _fill(self) -> None:
        while self._start_known and not self._last_started and len(self._flight) + self._awaited < self._readers:
            start = self._start
            self._start_known = False
            # Only the page the writer waits for may wait for a connection: a page started while
            # another is being read is ahead.
            task = asyncio.create_task(self._read(start, ahead=self._reading > 0 or bool(self._flight)))
            self._flight.append((task, start))

    def _ends_at(self, end: store.ExportKey | None, last: bool) -> None:
        """The page being read ends at ``end``; unless it is the ``last``, start the next one."""
        self._start, self._start_known, self._last_started = end, True, last
        self._fill()

    async def _read(self, start: store.ExportKey | None, *, ahead: bool) -> list[bytes] | None:
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
        full = len(rows) == self._limit  # may still be the last: the next page then comes back empty
        self._ends_at(store.export_key(rows[-1]) if full else None, not full)
        return lines

    async def _probed_page(self, conn: Any, start: store.ExportKey | None) -> list[bytes]:
        t0 = time.monotonic()
        end, last = await store.export_page_end(conn, self._target.layout, self._window, after=start, limit=self._limit)
        t1 = time.monotonic()
        self._ends_at(end, last)  # the next page starts now, on another connection
        rows = await self._page(conn, start, end)
        backend = conn.get_server_pid()
        if not last and backend in self._warm:  # a first probe on a connection also plans it
            dear = t1 - t0 > PROBE_SHARE * (time.monotonic() - t1)
            self._dear_probes = self._dear_probes + 1 if dear else 0
            if self._dear_probes >= 2:
                # Finding the end costs nearly as much as reading the page (no index for this
                # order: the probe scans what the page scans), twice in a row — not one slow
                # moment: read one page at a time from here on.
                self.probing = False
        self._warm.add(backend)
        return await self._render(conn, self._target, rows)

    async def _page(self, conn: Any, start: store.ExportKey | None, end: store.ExportKey | None) -> list[Any]:
        return await store.export_lines(
            conn, self._target.layout, self._window, envelope=self._envelope, after=start, upto=end, limit=self._limit
        )
