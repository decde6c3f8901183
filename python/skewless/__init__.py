"""skewless: an embedded feature store with a Rust core.

One definition of every feature, the same numbers in training and in serving.
"""

from __future__ import annotations

from . import errors
from ._core import __version__
from .asof import asof_join
from .online import OnlineStore, Reader, Status, WriteResult

__all__ = ["errors", "__version__", "asof_join", "OnlineStore", "Reader", "Status", "WriteResult"]
