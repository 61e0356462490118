"""The arq seam: worker settings, the JSON serializer, and the adapters from arq to ``jobs``.

``arq worker.WorkerSettings`` and ``sessionctl worker`` run the same worker; the settings are
read from the environment when ``WorkerSettings`` is first looked up.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        from worker.settings import build_worker_settings

        return build_worker_settings()
    raise AttributeError(name)
