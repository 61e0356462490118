"""The arq seam: enqueueing (:mod:`.enqueue`, :mod:`.queue`), the job index, the worker's settings,
life, job runs and crons, the JSON serializer — everything that knows arq. Nothing above it is
imported here: not the producer, the CLI or the API.

``arq sessionctl.worker.WorkerSettings`` and ``sessionctl worker`` run the same worker; the settings
are read from the environment when ``WorkerSettings`` is first looked up.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from sessionctl.worker.settings import build_worker_settings

        return build_worker_settings()
    raise AttributeError(name)
