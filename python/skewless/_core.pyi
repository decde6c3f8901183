"""Type stubs of the Rust extension ``skewless._core``."""

__version__: str
