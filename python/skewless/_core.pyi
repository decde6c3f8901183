"""Type stubs of the Rust extension ``skewless._core``."""

from typing import Any

import numpy as np
import numpy.typing as npt

__version__: str

# --- asof (skewless.asof.asof_join normalizes the arguments) ---
def asof_join(
    left: object,
    right: object,
    on: str,
    by: list[str],
    direction: str,
    tolerance_kind: str | None,
    tolerance: int | None,
    allow_exact_matches: bool,
    tie_breaker: str | None,
    suffix: str | None,
    sequence: str | None = None,
) -> Any: ...

# --- window (skewless.window.window_aggregate checks and names the aggregations) ---
def window_aggregate(
    labels: object,
    events: object,
    on: str,
    by: list[str],
    sequence: str | None,
    aggregations: list[tuple[str, str, int, str]],
) -> Any: ...

# --- online store (skewless.online) ---

class OnlineStore:
    def __init__(self, path: str, *, map_size: int | None = ..., max_map_size: int | None = ...) -> None: ...
    def write(
        self, view: str, data: Any, *, keys: list[str], timestamp: str, created_timestamp: str | None = ...
    ) -> tuple[int, int]: ...
    def reader(self, view: str, columns: list[str] | None = ...) -> Reader: ...
    def views(self) -> list[str]: ...
    def schema(self, view: str) -> Any: ...
    def clear_stale_readers(self) -> int: ...
    @property
    def stale_readers_cleared(self) -> int: ...
    @property
    def map_size(self) -> int: ...
    @property
    def path(self) -> str: ...

class Reader:
    def get_numpy(
        self, keys: Any, *, as_of: Any = ..., ttl: Any = ...
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]: ...
    def get(self, keys: Any, *, as_of: Any = ..., ttl: Any = ..., status_column: str = ...) -> Any: ...
    @property
    def columns(self) -> list[str]: ...
    @property
    def key_columns(self) -> list[str]: ...
    @property
    def view(self) -> str: ...
