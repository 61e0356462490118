"""How errors become arq outcomes, in one place.

- :class:`TransientError` (database gone, erasure incomplete): ``Retry`` with exponential backoff
  and full jitter, until ``SESSIONCTL_MAX_TRIES``; the last try fails with the real error.
- :class:`PermanentError` (bad input, unknown agent): fail at once, no retry.
- anything else: fail at once (arq does not retry plain exceptions), logged by class name.
"""

from __future__ import annotations

import random

from arq.worker import Retry

from sessionctl.errors import TransientError

MAX_BACKOFF_S = 300.0


def backoff(job_try: int, base: float) -> float:
    """Full-jitter exponential backoff: uniform in [base/2, base * 2**(try-1)], capped."""
    ceiling = min(MAX_BACKOFF_S, base * (2 ** max(0, job_try - 1)))
    return random.uniform(min(base / 2, ceiling), ceiling)


def to_arq(exc: BaseException, *, job_try: int, max_tries: int, base_delay: float) -> BaseException:
    """The exception to raise to arq for ``exc``."""
    if isinstance(exc, TransientError) and job_try < max_tries:
        return Retry(defer=backoff(job_try, base_delay))
    return exc
