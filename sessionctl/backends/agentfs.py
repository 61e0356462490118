"""AgentFS's local file system (``agno.fs.local.LocalFileSystem(root)``): a person's files are a
directory per namespace — their partition, ``<namespace>%%<encoded user id>`` — and, for a namespace
with ``{user_id}`` in it (declared in ``templates``), the shared directory of the namespace Agno
resolves for them. Directory names are Agno's own encoding (its code, not a copy). Files carry no
owner of their own: a person's files are the files of those directories."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sessionctl.backends.base import Backend, Person
from sessionctl.errors import StoreMisdeclared

PARTITION = "%%"


def check_templates(label: str, templates: list[str]) -> None:
    for template in templates:
        if "{user_id}" not in template or template.count("{") != 1:
            raise StoreMisdeclared(
                f"{label}: template {template!r} must hold {{user_id}} and no other placeholder"
                " (a namespace per agent or team cannot be listed for a person)"
            )


def resolved(template: str, user: str) -> str | None:
    """The namespace Agno resolves ``template`` to for ``user`` (its own code), or ``None`` when
    Agno refuses the id there (it then never wrote such a namespace)."""
    from agno.fs import FileSystem
    from agno.fs.errors import FileSystemError
    from agno.fs.local import LocalFileSystem

    try:
        fs = FileSystem(backend=LocalFileSystem("/nonexistent"), namespace=template)  # names only: no file is touched
        return str(fs.resolve(user_id=user).namespace)
    except FileSystemError:
        return None


class AgentFsBackend(Backend):
    expires = True

    def _open(self) -> None:
        from agno.fs.local import LocalFileSystem

        self.root = Path(self.decl.root)
        if not self.root.is_dir():
            raise StoreMisdeclared(f"{self.label}: no AgentFS directory at {self.root} (sessionctl never creates one)")
        self.local = LocalFileSystem(self.root)
        check_templates(self.label, self.decl.templates)

    def _dirs(self, user: str) -> list[Path]:
        """The person's directories that exist."""
        found = [e for e in self.root.iterdir() if e.is_dir() and e.name.endswith(PARTITION + self._enc(user))]
        for template in self.decl.templates:
            namespace = resolved(template, user)
            if namespace is not None:
                found.append(self.root / self.local._encode_namespace(namespace))
        return [d for d in found if d.is_dir() and PARTITION not in d.name.split(PARTITION + self._enc(user))[0]]

    def _enc(self, user: str) -> str:
        return str(self.local._encode_user_id(user))

    def _files(self, user: str) -> list[Path]:
        return [f for d in self._dirs(user) for f in sorted(d.rglob("*")) if f.is_file()]

    def _count(self, person: Person) -> int:
        return sum(len(self._files(u)) for u in person.users)

    def _erase(self, person: Person) -> int:
        n = 0
        for user in person.users:
            for d in self._dirs(user):
                n += sum(1 for f in d.rglob("*") if f.is_file())
                shutil.rmtree(d)
        return n

    def _rows(self, user: str) -> list[dict[str, Any]]:
        out = []
        for f in self._files(user):
            rel = f.relative_to(self.root).as_posix()
            out.append({"path": rel, "content": f.read_text(encoding="utf-8", errors="replace")})
        return out

    def _expire(self, cutoff: int, dry_run: bool, keep: list[str]) -> tuple[int, int]:
        """Files last written before ``cutoff`` (their mtime: AgentFS keeps no other time on disk),
        but none in the directories of the users of ``keep`` (under a legal hold)."""
        held = [d for u in keep for d in self._dirs(u)]
        old = self._older(cutoff, held)
        if dry_run:
            return len(old), len(old)
        for f in old:
            f.unlink(missing_ok=True)
        return len(old), len(self._older(cutoff, held))

    def _older(self, cutoff: int, held: list[Path]) -> list[Path]:
        """Files last written before ``cutoff``, outside the ``held`` directories."""
        return [
            f
            for f in self.root.rglob("*")
            if f.is_file() and f.stat().st_mtime < cutoff and not any(f.is_relative_to(d) for d in held)
        ]

    def _owners(self) -> list[tuple[str, int]]:
        found: Counter[str] = Counter()
        for entry in self.root.iterdir():
            if entry.is_dir() and PARTITION in entry.name:
                found[unquote(entry.name.split(PARTITION, 1)[1])] += sum(1 for f in entry.rglob("*") if f.is_file())
        return list(found.items())
