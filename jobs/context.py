"""What a job gets from the worker that runs it."""

from __future__ import annotations

from dataclasses import dataclass

from sessionctl.config import Settings
from sessionctl.databases import Databases


@dataclass(slots=True)
class JobContext:
    settings: Settings
    databases: Databases
    hash_key: bytes
    job_id: str
    job_try: int = 1
