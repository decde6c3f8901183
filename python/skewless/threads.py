"""How many threads the Rust kernels use in this process.

By default a kernel call spreads over one thread per core of the machine (or ``RAYON_NUM_THREADS``
when it is set before the first call). A process that gets only a share of the cores — a Spark task
given ``spark.task.cpus`` cores while other tasks run beside it (:mod:`skewless.spark` sets this in
every task), a service running several workers per machine — sets its own count here; it holds for every
later kernel call of the process, from any thread.

Example:
    >>> from skewless.threads import num_threads, set_num_threads
    >>> set_num_threads(1)
    >>> num_threads()
    1
    >>> set_num_threads(None)  # back to the default: one thread per core
    >>> num_threads() >= 1
    True
"""

from __future__ import annotations

import numbers

from . import _core
from .errors import InvalidArgumentError

__all__ = ["num_threads", "set_num_threads"]

#: More threads than this is a mistake (a count of rows, bytes...), not a pool size.
MAX_THREADS = 4096


def set_num_threads(threads: int | None) -> None:
    """Run every later kernel call of this process on ``threads`` threads (None: one per core).

    Calls already running finish on the threads they started with."""
    if threads is None:
        _core.set_num_threads(0)
        return
    if (
        not isinstance(threads, numbers.Integral)
        or isinstance(threads, bool)
        or not 0 < threads <= MAX_THREADS
    ):
        raise InvalidArgumentError(
            f"threads must be a whole number from 1 to {MAX_THREADS}, or None (one per core); got {threads!r}"
        )
    _core.set_num_threads(int(threads))


def num_threads() -> int:
    """The number of threads a kernel call started now runs on."""
    return _core.num_threads()
