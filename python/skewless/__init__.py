"""skewless: an embedded feature store with a Rust core.

One definition of every feature, the same numbers in training and in serving.
"""

from __future__ import annotations

from . import errors
from ._core import __version__
from .asof import asof_join
from .canary import Canary
from .definitions import (
    Array,
    Bool,
    Bytes,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    Float32,
    Float64,
    Int32,
    Int64,
    String,
    Timestamp,
)
from .imputation import Impute
from .online import OnlineStore, Reader, Status, WriteResult
from .serving import OnlineReader, OnlineResponse
from .skew import Alert, SkewReport
from .statistics import Statistics
from .store import FeatureStore
from .transforms import (
    Transform,
    TransformView,
    Udf,
    bucketize,
    clip,
    log1p,
    min_max_scale,
    one_hot,
    transform,
    zscore,
)
from .window import Aggregation, window_aggregate

__all__ = [
    "errors",
    "__version__",
    "asof_join",
    "window_aggregate",
    "Aggregation",
    "Alert",
    "Array",
    "Bool",
    "Bytes",
    "Canary",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "OnlineReader",
    "OnlineResponse",
    "OnlineStore",
    "Reader",
    "SkewReport",
    "Statistics",
    "Status",
    "String",
    "Timestamp",
    "WriteResult",
    "Impute",
    "Transform",
    "TransformView",
    "Udf",
    "bucketize",
    "clip",
    "log1p",
    "min_max_scale",
    "one_hot",
    "transform",
    "zscore",
]
