"""Feature definitions: entities, fields and their dtypes, feature views, feature services.

Definitions are plain values: building one checks only what it can check alone (names, dtypes, a
non-negative TTL); :meth:`skewless.FeatureStore.apply` checks them against each other and the registry.

Example:
    >>> from datetime import timedelta
    >>> from skewless import Entity, FeatureView, Field, Float64, Int64
    >>> user = Entity("user", join_keys=["user_id"], dtype=Int64)
    >>> stats = FeatureView(
    ...     "user_stats", entities=[user], ttl=timedelta(days=30),
    ...     schema=[Field("spend_7d", Float64), Field("n_txn_7d", Int64)],
    ... )
    >>> stats.feature_names
    ['spend_7d', 'n_txn_7d']
"""

from __future__ import annotations

import collections
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .durations import to_timedelta
from .errors import DtypeError, InvalidArgumentError, RegistryError
from .imputation import Impute, previous_store

__all__ = [
    "DType",
    "Int32",
    "Int64",
    "Float32",
    "Float64",
    "Bool",
    "String",
    "Bytes",
    "Timestamp",
    "Array",
    "Entity",
    "Field",
    "FeatureView",
    "FeatureService",
    "dtype_from_name",
    "dtype_from_arrow",
]

#: Every timestamp skewless stores is an instant in UTC microseconds.
TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Longest name: a view's name is a folder name (most file systems allow 255 bytes) and part of an
#: online-store key (the engine allows 200 bytes); names are ASCII, so characters are bytes.
MAX_NAME = 200


def _check_name(name: Any, what: str) -> str:
    # Names become column names, folder names and LMDB database names: keep them portable. This check
    # is also what keeps every path the store builds from a name inside the store's folder.
    if not isinstance(name, str) or not _NAME.fullmatch(name) or "__" in name:
        raise InvalidArgumentError(
            f"{what} name {name!r} is not valid: use letters, digits and single underscores, not starting "
            "with a digit (double underscores are reserved for full feature names view__feature)"
        )
    if len(name) > MAX_NAME:
        raise InvalidArgumentError(
            f"{what} name {name[:20]!r}... is {len(name)} characters long; use at most {MAX_NAME}"
        )
    return name


@dataclass(frozen=True)
class DType:
    """A feature or key type. Use the module constants (``Int64``, ``Float64``...) or :func:`Array`.

    Example:
        >>> from skewless import Float32, Array
        >>> Array(Float32, 4).arrow
        FixedSizeListType(fixed_size_list<item: float>[4])
    """

    name: str
    item: str | None = None
    size: int | None = None

    @property
    def arrow(self) -> pa.DataType:
        """The Arrow type data of this dtype is stored as."""
        if self.name == "Array":
            assert self.item is not None and self.size is not None
            return pa.list_(_SCALARS[self.item], self.size)
        return _SCALARS[self.name]

    def to_json(self) -> str:
        return f"Array({self.item},{self.size})" if self.name == "Array" else self.name

    def __repr__(self) -> str:
        return f"Array({self.item}, {self.size})" if self.name == "Array" else self.name


_SCALARS: dict[str, pa.DataType] = {
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "Bool": pa.bool_(),
    "String": pa.string(),
    "Bytes": pa.binary(),
    "Timestamp": TIMESTAMP_TYPE,
}

Int32 = DType("Int32")
Int64 = DType("Int64")
Float32 = DType("Float32")
Float64 = DType("Float64")
Bool = DType("Bool")
String = DType("String")
Bytes = DType("Bytes")
Timestamp = DType("Timestamp")

#: The dtypes an entity's join key may have (the online key encoding and the join's key hashing support
#: these; see rust/src/online/key.rs).
KEY_DTYPES = ("Int32", "Int64", "String", "Bytes")
#: One microsecond: the resolution of every timestamp, TTL and window in skewless.
MICROSECOND = dt.timedelta(microseconds=1)


def Array(item: DType, n: int) -> DType:  # noqa: N802 - reads as a type constructor, like Feast's
    """A fixed-size vector of ``n`` floats (an embedding).

    Example:
        >>> from skewless import Array, Float64
        >>> Array(Float64, 3)
        Array(Float64, 3)
    """
    if item not in (Float32, Float64):
        raise DtypeError(f"Array items must be Float32 or Float64, not {item!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        raise InvalidArgumentError(f"Array size must be a positive int, not {n!r}")
    return DType("Array", item.name, n)


def dtype_from_name(text: str) -> DType:
    """Parse :meth:`DType.to_json` output back (the registry stores dtypes this way)."""
    m = re.fullmatch(r"Array\((\w+),(\d+)\)", text)
    if m:
        return Array(DType(m.group(1)), int(m.group(2)))
    if text not in _SCALARS:
        raise RegistryError(f"unknown dtype {text!r} in the registry")
    return DType(text)


def dtype_from_arrow(t: pa.DataType) -> DType | None:
    """The dtype an Arrow type is stored as, or None when skewless does not store that type."""
    if pa.types.is_large_string(t) or pa.types.is_string(t) or pa.types.is_string_view(t):
        return String
    if (
        pa.types.is_large_binary(t)
        or pa.types.is_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_fixed_size_binary(t)
    ):
        return Bytes
    if pa.types.is_timestamp(t):
        return Timestamp
    if pa.types.is_fixed_size_list(t) and t.value_type in (pa.float32(), pa.float64()):
        return Array(Float32 if t.value_type == pa.float32() else Float64, t.list_size)
    for name, at in _SCALARS.items():
        if t == at:
            return DType(name)
    return None


def _as_dtype(d: Any, what: str) -> DType:
    if isinstance(d, DType):
        return d
    raise DtypeError(
        f"{what}: {d!r} is not a skewless dtype; use Int64, Float64, String, Array(Float32, n)..."
    )


@dataclass(frozen=True)
class Entity:
    """What features describe (a user, a merchant), identified by one or more join key columns.

    ``dtype`` is the key type (one dtype for every join key, or one per key); when None, the first
    write fixes it.

    Example:
        >>> from skewless import Entity, Int64
        >>> Entity("user", join_keys=["user_id"], dtype=Int64).join_keys
        ['user_id']
    """

    name: str
    join_keys: list[str] = field(default_factory=list)
    dtype: DType | tuple[DType, ...] | None = None
    description: str = ""

    def __init__(
        self,
        name: str,
        join_keys: Sequence[str] | None = None,
        dtype: DType | Sequence[DType] | None = None,
        description: str = "",
    ) -> None:
        _check_name(name, "entity")
        keys = list(join_keys) if join_keys is not None else [name + "_id"]
        if not keys:
            raise InvalidArgumentError(f"entity {name!r} needs at least one join key")
        for k in keys:
            _check_name(k, f"entity {name!r} join key")
        if len(set(keys)) != len(keys):
            raise InvalidArgumentError(f"entity {name!r} repeats a join key: {keys}")
        dts: DType | tuple[DType, ...] | None
        if dtype is None or isinstance(dtype, DType):
            dts = dtype
        else:
            dts = tuple(_as_dtype(d, f"entity {name!r}") for d in dtype)
            if len(dts) != len(keys):
                raise InvalidArgumentError(f"entity {name!r}: {len(keys)} join keys but {len(dts)} dtypes")
        for d in [dts] if isinstance(dts, DType) else list(dts or ()):
            if d.name not in KEY_DTYPES:
                raise DtypeError(
                    f"entity {name!r}: key dtype {d!r} is not supported; use Int32, Int64, String or Bytes"
                )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "join_keys", keys)
        object.__setattr__(self, "dtype", dts)
        object.__setattr__(self, "description", description)

    def __hash__(self) -> int:  # definitions go in sets and dict keys; the name identifies them
        return hash((type(self).__name__, self.name))

    def key_dtypes(self) -> list[DType] | None:
        """The declared dtype of each join key, or None when the first write decides."""
        if self.dtype is None:
            return None
        if isinstance(self.dtype, DType):
            return [self.dtype] * len(self.join_keys)
        return list(self.dtype)

    def to_spec(self) -> dict[str, Any]:
        kd = self.key_dtypes()
        return {
            "name": self.name,
            "join_keys": list(self.join_keys),
            "dtype": None if kd is None else [d.to_json() for d in kd],
            "description": self.description,
        }

    @classmethod
    def from_spec(cls, s: Mapping[str, Any]) -> Entity:
        dt_ = s.get("dtype")
        return cls(
            s["name"],
            join_keys=s["join_keys"],
            dtype=None if dt_ is None else [dtype_from_name(x) for x in dt_],
            description=s.get("description", ""),
        )


@dataclass(frozen=True)
class Field:
    """One feature column of a view: a name and a dtype.

    Example:
        >>> from skewless import Field, Float64
        >>> Field("spend_7d", Float64)
        Field(name='spend_7d', dtype=Float64)
    """

    name: str
    dtype: DType

    def __post_init__(self) -> None:
        _check_name(self.name, "field")
        _as_dtype(self.dtype, f"field {self.name!r}")


def _ttl(ttl: Any, name: str) -> dt.timedelta | None:
    if ttl is None:
        return None
    td = to_timedelta(ttl, f"feature view {name!r}: ttl")
    if td // MICROSECOND >= 1 << 63:
        raise InvalidArgumentError(
            f"feature view {name!r}: ttl {td} does not fit in 64-bit microseconds (about 292,000 years); "
            "use None for no expiry"
        )
    return td


@dataclass(frozen=True)
class FeatureView:
    """A group of features about the same entities, written together with one event timestamp.

    ``ttl``: how long a value stays valid after its timestamp (None: forever): any duration
    :mod:`skewless.durations` accepts (``timedelta(days=30)``, ``"30d"``, ``numpy.timedelta64(30, "D")``,
    ``pandas.Timedelta``), kept as a ``datetime.timedelta`` of whole microseconds. It bounds the
    point-in-time join (a value older than ``t - ttl`` gives null) and online reads alike.
    ``created_timestamp_field``: among rows with the same key and timestamp, the latest created wins.
    ``source``: a Parquet file, folder or glob holding this view's history (written by someone else);
    without it the history lives in the store (``<store>/offline/<view>/``) and grows by ``write``.
    ``impute``: :class:`skewless.imputation.Impute` entries, one per feature at most: how its missing
    values are filled wherever it is served or retrieved (plain views only, not yet event views).
    ``aggregations``: a list of :class:`skewless.Aggregation` makes this an event view: ``schema`` lists
    the raw event columns and the features are the aggregations' outputs (see :mod:`skewless.events`).

    Example:
        >>> from datetime import timedelta
        >>> from skewless import Entity, FeatureView, Field, Float64
        >>> fv = FeatureView("v", [Entity("user")], [Field("x", Float64)], ttl=timedelta(days=1))
        >>> fv.join_keys
        ['user_id']
    """

    name: str
    entities: list[Entity]
    schema: list[Field]
    ttl: dt.timedelta | None = None
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = None
    source: str | None = None
    online: bool = True
    description: str = ""
    owner: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    impute: list[Impute] = field(default_factory=list)
    aggregations: list[Any] = field(default_factory=list)

    def __init__(
        self,
        name: str,
        entities: Iterable[Entity],
        schema: Iterable[Field],
        ttl: dt.timedelta | str | None = None,
        timestamp_field: str = "event_timestamp",
        created_timestamp_field: str | None = None,
        source: str | None = None,
        online: bool = True,
        description: str = "",
        owner: str = "",
        tags: Mapping[str, str] | None = None,
        impute: Iterable[Impute] = (),
        aggregations: Iterable[Any] | None = None,
    ) -> None:
        _check_name(name, "feature view")
        ents = list(entities)
        if not ents or not all(isinstance(e, Entity) for e in ents):
            raise InvalidArgumentError(f"feature view {name!r}: entities must be a non-empty list of Entity")
        fields = list(schema)
        if not fields or not all(isinstance(f, Field) for f in fields):
            raise InvalidArgumentError(f"feature view {name!r}: schema must be a non-empty list of Field")
        _check_name(timestamp_field, f"feature view {name!r} timestamp_field")
        if created_timestamp_field is not None:
            _check_name(created_timestamp_field, f"feature view {name!r} created_timestamp_field")
        keys = [k for e in ents for k in e.join_keys]
        names = keys + [timestamp_field] + ([created_timestamp_field] if created_timestamp_field else [])
        names += [f.name for f in fields]
        dup = sorted(n for n, c in collections.Counter(names).items() if c > 1)
        if dup:
            raise InvalidArgumentError(
                f"feature view {name!r}: column name(s) {dup} used twice among join keys, timestamp fields "
                "and features; rename the feature(s)"
            )
        if source is not None and not isinstance(source, str):
            raise InvalidArgumentError(f"feature view {name!r}: source must be a path or glob string")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "entities", ents)
        object.__setattr__(self, "schema", fields)
        object.__setattr__(self, "ttl", _ttl(ttl, name))
        object.__setattr__(self, "timestamp_field", timestamp_field)
        object.__setattr__(self, "created_timestamp_field", created_timestamp_field)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "online", bool(online))
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "tags", dict(tags or {}))
        imps = list(impute)
        fnames = [f.name for f in fields]
        for i in imps:
            if not isinstance(i, Impute):
                raise InvalidArgumentError(
                    f"feature view {name!r}: impute must be a list of Impute, not {i!r}"
                )
            if i.feature not in fnames:
                raise InvalidArgumentError(
                    f"feature view {name!r}: Impute names {i.feature!r}, which is not one of its features "
                    f"{fnames}"
                )
            if i.strategy == "previous" and len(previous_store(name, i.feature)) > MAX_NAME:
                raise InvalidArgumentError(
                    f"feature view {name!r}: Impute({i.feature!r}, 'previous') keeps its online records "
                    f"under {previous_store(name, i.feature)[:30]!r}..., longer than {MAX_NAME} characters; "
                    "shorten the view or feature name"
                )
        dup_imp = sorted(n for n, c in collections.Counter(i.feature for i in imps).items() if c > 1)
        if dup_imp:
            raise InvalidArgumentError(f"feature view {name!r}: feature(s) {dup_imp} have two Impute entries")
        object.__setattr__(self, "impute", imps)
        aggs: list[Any] = []
        if aggregations is not None:
            from .events import check_aggregations

            aggs = check_aggregations(
                name, list(aggregations), fields, names, self.ttl, created_timestamp_field
            )
        if aggs and imps:
            raise InvalidArgumentError(
                f"feature view {name!r}: imputation of window features is not supported yet; declare "
                "the Impute on a TransformView over the aggregate, or drop it"
            )
        object.__setattr__(self, "aggregations", aggs)

    def __hash__(self) -> int:  # definitions go in sets and dict keys; the name identifies them
        return hash((type(self).__name__, self.name))

    @property
    def is_event_view(self) -> bool:
        """Whether the view's features are window aggregates of its raw event columns."""
        return bool(self.aggregations)

    @property
    def join_keys(self) -> list[str]:
        """The key columns of every entity, in order."""
        return [k for e in self.entities for k in e.join_keys]

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.schema]

    @property
    def time_columns(self) -> list[str]:
        """The event timestamp field, then the created timestamp field when the view has one."""
        return [self.timestamp_field] + (
            [self.created_timestamp_field] if self.created_timestamp_field else []
        )

    @property
    def tie_columns(self) -> list[str]:
        """Join keys then time columns: rows equal on all of them are one full tie."""
        return self.join_keys + self.time_columns

    @property
    def stored_columns(self) -> list[str]:
        """The columns of the view's history, in stored order: keys, time columns, features."""
        return self.tie_columns + self.feature_names

    @property
    def ttl_us(self) -> int | None:
        """The TTL in whole microseconds (None: no expiry)."""
        return None if self.ttl is None else self.ttl // MICROSECOND

    def feature_dtype(self, name: str) -> DType:
        """The dtype of feature ``name`` as served and retrieved: an aggregate's output dtype in an event
        view, the field's dtype otherwise."""
        if self.is_event_view:
            from .events import aggregate_dtype, aggregation

            a = aggregation(self, name)
            return DType(aggregate_dtype(a.function, self.get_field(a.column).dtype.name))
        return self.get_field(name).dtype

    def get_field(self, name: str) -> Field:
        for f in self.schema:
            if f.name == name:
                return f
        from .errors import UnknownFeatureError

        raise UnknownFeatureError(
            f"feature view {self.name!r} has no feature {name!r}; it has {self.feature_names}"
        )

    def to_spec(self) -> dict[str, Any]:
        # "aggregations" only for event views: a plain view's spec stays as registries already hold it.
        extra: dict[str, Any] = {}
        if self.aggregations:
            from .events import to_spec

            extra["aggregations"] = to_spec(self.aggregations)
        return {
            "name": self.name,
            "entities": [e.name for e in self.entities],
            "schema": [{"name": f.name, "dtype": f.dtype.to_json()} for f in self.schema],
            "ttl_us": self.ttl_us,
            "timestamp_field": self.timestamp_field,
            "created_timestamp_field": self.created_timestamp_field,
            "source": self.source,
            "online": self.online,
            "description": self.description,
            "owner": self.owner,
            "tags": dict(self.tags),
            # Only when present, so that a view without imputation keeps the spec (and version) it had.
            **({"impute": [i.to_spec() for i in self.impute]} if self.impute else {}),
        } | extra

    @classmethod
    def from_spec(cls, s: Mapping[str, Any], entities: Mapping[str, Entity]) -> FeatureView:
        return cls(
            s["name"],
            entities=[entities[e] for e in s["entities"]],
            schema=[Field(f["name"], dtype_from_name(f["dtype"])) for f in s["schema"]],
            ttl=None if s["ttl_us"] is None else dt.timedelta(microseconds=s["ttl_us"]),
            timestamp_field=s["timestamp_field"],
            created_timestamp_field=s["created_timestamp_field"],
            source=s["source"],
            online=s["online"],
            description=s.get("description", ""),
            owner=s.get("owner", ""),
            tags=s.get("tags", {}),
            impute=[Impute.from_spec(i) for i in s.get("impute", [])],
            aggregations=_aggregations_from_spec(s.get("aggregations")),
        )


def _aggregations_from_spec(specs: Any) -> list[Any] | None:
    if specs is None:
        return None
    from .events import from_spec

    return from_spec(specs)


@dataclass(frozen=True)
class FeatureService:
    """A model's feature list: ``"view:feature"`` references (or whole views and transform views), kept
    under one name.

    Example:
        >>> from skewless import FeatureService
        >>> FeatureService("fraud_model", ["user_stats:spend_7d", "merchant_risk:score"]).features
        ['user_stats:spend_7d', 'merchant_risk:score']
    """

    name: str
    features: list[str]
    description: str = ""

    def __init__(self, name: str, features: Iterable[Any], description: str = "") -> None:
        _check_name(name, "feature service")
        refs: list[str] = []
        for f in features:
            if isinstance(f, FeatureView):
                served = [a.name for a in f.aggregations] if f.is_event_view else f.feature_names
                refs.extend(f"{f.name}:{n}" for n in served)
            elif not isinstance(f, str) and hasattr(f, "output_names"):
                # A skewless.transforms.TransformView (not imported here: it builds on this module).
                refs.extend(f"{f.name}:{n}" for n in f.output_names)
            elif isinstance(f, str) and f.count(":") == 1:
                refs.append(f)
            else:
                raise InvalidArgumentError(
                    f"feature service {name!r}: {f!r} is not a 'view:feature' reference or a FeatureView"
                )
        if not refs:
            raise InvalidArgumentError(f"feature service {name!r} lists no features")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "features", refs)
        object.__setattr__(self, "description", description)

    def __hash__(self) -> int:  # definitions go in sets and dict keys; the name identifies them
        return hash((type(self).__name__, self.name))

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, "features": list(self.features), "description": self.description}

    @classmethod
    def from_spec(cls, s: Mapping[str, Any]) -> FeatureService:
        return cls(s["name"], s["features"], s.get("description", ""))
