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
def window_push(
    store: OnlineStore,
    view: str,
    events: object,
    keys: list[str],
    timestamp: str,
    sequence: str,
    columns: list[str],
    horizon_us: int,
    reset: bool,
) -> tuple[int, int]: ...

class PendingPush:
    def commit(self) -> tuple[int, int]: ...
    def abort(self) -> None: ...

def window_push_start(
    store: OnlineStore,
    view: str,
    events: object,
    keys: list[str],
    timestamp: str,
    sequence: str,
    columns: list[str],
    horizon_us: int,
) -> PendingPush: ...

# --- threads (skewless.threads checks the argument) ---
def set_num_threads(threads: int) -> None: ...
def num_threads() -> int: ...

# --- online store (skewless.online) ---

class OnlineStore:
    def __init__(self, path: str, *, map_size: int | None = ..., max_map_size: int | None = ...) -> None: ...
    def write(
        self,
        view: str,
        data: Any,
        *,
        keys: list[str],
        timestamp: str,
        created_timestamp: str | None = ...,
        also: list[tuple[str, Any]] = ...,
    ) -> tuple[int, int]: ...
    def reader(self, view: str, columns: list[str] | None = ...) -> Reader: ...
    def views(self) -> list[str]: ...
    def schema(self, view: str) -> Any: ...
    def clear_stale_readers(self) -> int: ...
    def verify(self) -> tuple[int, int, int, int]: ...
    @property
    def stale_readers_cleared(self) -> int: ...
    @property
    def map_size(self) -> int: ...
    @property
    def path(self) -> str: ...

STATUS_CODES: list[tuple[str, int]]

class ServingPlan:
    def __init__(self, store: OnlineStore, parts: list[Any], post: Any = ...) -> None: ...
    def get_numpy(
        self, entity_rows: Any, as_of: Any = ..., request: list[Any] | None = ...
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8]]: ...
    def get_numpy_at(
        self, entity_rows: Any, as_of: Any = ..., request: list[Any] | None = ...
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int8], int]: ...
    def get(self, entity_rows: Any, as_of: Any = ..., request: list[Any] | None = ...) -> Served: ...
    @property
    def key_names(self) -> list[str]: ...
    @property
    def versions(self) -> list[tuple[str, int]]: ...

class TransformProgram:
    def __init__(self, n_inputs: int, nodes: list[tuple[str, str, int, Any]]) -> None: ...
    def run(self, table: Any, select: list[int], names: list[str], masks: bool) -> Any: ...

class Served:
    def table(self, names: list[str]) -> Any: ...
    @property
    def status(self) -> npt.NDArray[np.int8]: ...
    @property
    def served_at_us(self) -> int: ...
    def __len__(self) -> int: ...

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
