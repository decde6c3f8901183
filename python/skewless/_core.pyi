"""Type stubs of the Rust extension ``skewless._core``."""

from typing import Any

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
) -> Any: ...
