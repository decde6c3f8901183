"""Transforms, defined once and run by the same code in training sets and served vectors.

Built-ins are data: a typed spec, stored in the registry, compiled once into an engine program
(``rust/src/transform/``) that runs over Arrow columns, offline after the point-in-time join and online
inside the serving plan's call. Each reads one input, ``"view:feature"`` or ``"request:column"`` (a
value that exists only in the request: a column of ``entity_df`` / ``entity_rows``), and makes one
output named ``<feature>_<transform>`` unless ``name=`` is given:

- ``zscore(feature, stats=N)``: ``(x - mean) / stddev_samp`` with the mean and the *sample* standard
  deviation (n - 1) of statistics artifact N of the feature's view; float64.
- ``min_max_scale(feature, stats=N)``: ``(x - min) / (max - min)`` with artifact N's min and max (not
  clipped); float64.
- ``clip(feature, lo, hi)``: ``x`` bounded to ``[lo, hi]`` (None: unbounded on that side); float64.
- ``log1p(feature)``: ``ln(1 + x)``; float64 (``-1`` gives ``-inf``, below it NaN).
- ``bucketize(feature, boundaries)``: int32 index ``i`` with ``boundaries[i-1] <= x < boundaries[i]``,
  0 below the first boundary, ``len(boundaries)`` at or above the last.
- ``one_hot(feature, categories)``: ``Array(Float64, len(categories))``, 1.0 at the value's category,
  all zeros for a value in none (integer or string features).

Everywhere: a null input gives a null output (a feature with an imputation strategy is filled *before*
its transforms see it); NaN stays NaN (bucketize: null, it has no bucket) and infinities stay infinities
(clip bounds them, bucketize puts them in the first / last bucket). A statistics-based transform reads
its artifact when ``apply`` stores it: the numbers are written into the registry with the definition,
so a served z-score and a training z-score divide by the same float, and there is no way to pass
per-request statistics (the chapter's z-score incident cannot be written with this API).

Python UDFs for the rest: ``@transform(inputs=[...], outputs=[Field(...)], version=1)`` on a function
that takes a ``pyarrow.Table`` (one column per input, named by the input's feature or request column)
and returns a mapping of output name to column. It runs after the engine's stage, offline and online,
on the same Arrow inputs. The registry keeps a fingerprint of its code: applying changed code under the
same version raises :class:`skewless.errors.IncompatibleChangeError` (bump ``version``).

``TransformView(name, transforms=[...], impute=[...])`` groups them; its outputs are requested as
``"name:output"`` anywhere a feature is, mixed with plain features. A transform view whose inputs are
all request columns reads no view: online its rows are the request's (``entity_rows`` needs only
those columns).

Registry spec of a transform view, version 1 (section ``transform_views`` of ``registry.json``)::

    {"name": str, "description": str,
     "transforms": [
       {"kind": "zscore" | "min_max_scale" | "clip" | "log1p" | "bucketize" | "one_hot",
        "input": "view:feature" | "request:column", "output": str, "dtype": "Float64" | "Int32" | ...,
        "stats": <artifact version or null>,
        "params": {"mean", "std"} | {"min", "max"} | {"lo", "hi"} | {} | {"boundaries"} | {"categories"}},
       {"kind": "udf", "function": str, "version": int, "fingerprint": "sha256:<hex>",
        "inputs": [ref, ...], "outputs": [{"name": str, "dtype": str}, ...]}],
     "impute": [{"feature": ref, "strategy": str, "stats": <int or null>, "value": <the fill value>}]}

Example:
    >>> z = zscore("user_stats:income", stats=2)
    >>> z.output, z.to_spec()["kind"]
    ('income_zscore', 'zscore')
    >>> clip("request:amount", 0, 100, name="amount_capped").output
    'amount_capped'
"""

from __future__ import annotations

import hashlib
import inspect
import marshal
import textwrap
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from . import _core
from ._arrow import name_list
from .definitions import (
    Array,
    DType,
    FeatureService,
    FeatureView,
    Field,
    Float64,
    Int32,
    _check_name,
    dtype_from_name,
)
from .errors import (
    ColumnClashError,
    DtypeError,
    IncompatibleChangeError,
    InvalidArgumentError,
    MissingColumnError,
    MissingValueError,
    UnknownFeatureError,
)
from .events import aggregate_dtype
from .imputation import FROM_STATS, PREVIOUS, Impute, fit_value
from .refs import Plan, parse_ref, resolve

if TYPE_CHECKING:
    from .registry import Registry

__all__ = [
    "Transform",
    "Udf",
    "TransformView",
    "zscore",
    "min_max_scale",
    "clip",
    "log1p",
    "bucketize",
    "one_hot",
    "transform",
    "REQUEST",
]

#: The prefix of a request-time input: ``"request:<column>"``.
REQUEST = "request"
_NUMERIC = ("Int32", "Int64", "Float32", "Float64")


def _input(ref: Any, what: str) -> tuple[str, str]:
    view, feat = parse_ref(ref)
    _check_name(view, f"{what}: view of {ref!r}")
    _check_name(feat, f"{what}: feature of {ref!r}")
    return view, feat


def _stats_version(stats: Any, what: str) -> int:
    if not isinstance(stats, int) or isinstance(stats, bool) or stats < 1:
        raise InvalidArgumentError(
            f"{what}: name the statistics artifact it uses with stats=N (store.compute_statistics(view)"
            f".version), got {stats!r}; a transform never computes its own statistics"
        )
    return stats


@dataclass(frozen=True)
class Transform:
    """A built-in transform (made by :func:`zscore`, :func:`clip`... ): its kind, input, output name,
    statistics artifact version (or None) and parameters.

    Example:
        >>> log1p("v:x").output
        'x_log1p'
    """

    kind: str
    input: str
    output: str
    stats: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "input": self.input,
            "output": self.output,
            "stats": self.stats,
            "params": dict(self.params),
        }


def _builtin(kind: str, feature: str, name: str | None, stats: int | None, **params: Any) -> Transform:
    what = f"{kind}({feature!r})"
    _, feat = _input(feature, what)
    out = _check_name(name if name is not None else f"{feat}_{kind}", f"{what} output")
    return Transform(kind, feature, out, stats, params)


def zscore(feature: str, *, stats: int, name: str | None = None) -> Transform:
    """``(x - mean) / stddev_samp`` with the numbers of statistics artifact ``stats`` of the feature's
    view (sample standard deviation, n - 1). Example: ``zscore("user:income", stats=1)``."""
    return _builtin("zscore", feature, name, _stats_version(stats, f"zscore({feature!r})"))


def min_max_scale(feature: str, *, stats: int, name: str | None = None) -> Transform:
    """``(x - min) / (max - min)`` with artifact ``stats``' min and max. Example:
    ``min_max_scale("user:age", stats=1)``."""
    return _builtin("min_max_scale", feature, name, _stats_version(stats, f"min_max_scale({feature!r})"))


def _bound(x: Any, what: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)) or x != x:
        raise InvalidArgumentError(f"{what} must be a number or None, got {x!r}")
    return float(x)


def clip(feature: str, lo: float | None, hi: float | None, *, name: str | None = None) -> Transform:
    """``x`` bounded to ``[lo, hi]`` (None: open). Example: ``clip("request:amount", 0, 1000)``."""
    lo_, hi_ = _bound(lo, "clip: lo"), _bound(hi, "clip: hi")
    if lo_ is not None and hi_ is not None and lo_ > hi_:
        raise InvalidArgumentError(f"clip({feature!r}): lo {lo} > hi {hi}")
    return _builtin("clip", feature, name, None, lo=lo_, hi=hi_)


def log1p(feature: str, *, name: str | None = None) -> Transform:
    """``ln(1 + x)``. Example: ``log1p("user:spend")``."""
    return _builtin("log1p", feature, name, None)


def bucketize(feature: str, boundaries: Sequence[float], *, name: str | None = None) -> Transform:
    """The int32 bucket index of ``x`` among strictly increasing finite ``boundaries``. Example:
    ``bucketize("user:age", [18, 30, 65])``."""
    b = [_bound(x, "bucketize: a boundary") for x in boundaries]
    if not b or any(x is None or x in (float("inf"), float("-inf")) for x in b) or sorted(set(b)) != b:  # type: ignore[type-var]
        raise InvalidArgumentError(
            f"bucketize({feature!r}): boundaries must be finite, strictly increasing numbers, "
            f"got {boundaries!r}"
        )
    return _builtin("bucketize", feature, name, None, boundaries=b)


def one_hot(feature: str, categories: Sequence[int | str], *, name: str | None = None) -> Transform:
    """A float64 vector with 1.0 at the category of ``x``. Example: ``one_hot("user:city", ["a", "b"])``."""
    cats = list(categories)
    kinds = {type(c) for c in cats}
    if not cats or not (kinds <= {int} or kinds <= {str}) or len(set(cats)) != len(cats):
        raise InvalidArgumentError(
            f"one_hot({feature!r}): categories must be a non-empty list of distinct ints or of distinct strs"
        )
    return _builtin("one_hot", feature, name, None, categories=cats)


def fingerprint(fn: Callable[..., Any]) -> str:
    """A hash of a function's code: its source when Python can read it (so moving it in its file keeps
    it), else its compiled code."""
    try:
        text = textwrap.dedent(inspect.getsource(fn)).encode()
    except (OSError, TypeError):
        text = marshal.dumps(fn.__code__)
    return "sha256:" + hashlib.sha256(text).hexdigest()


#: Every UDF defined in this process, by (name, version): what the registry's specs are run with.
_UDFS: dict[tuple[str, int], Udf] = {}


@dataclass(frozen=True)
class Udf:
    """A Python transform (made by :func:`transform`): the function, its inputs, outputs, version and
    the fingerprint of its code. Calling it calls the function.

    Example:
        >>> from skewless import Field, Float64
        >>> @transform(inputs=["request:a"], outputs=[Field("a2", Float64)], version=1)
        ... def double(t):
        ...     return {"a2": [2.0 * x for x in t["a"].to_pylist()]}
        >>> double.outputs[0].name, double.version
        ('a2', 1)
    """

    fn: Callable[[pa.Table], Mapping[str, Any]]
    name: str
    inputs: list[str]
    outputs: list[Field]
    version: int
    fingerprint: str

    def __call__(self, table: pa.Table) -> Mapping[str, Any]:
        return self.fn(table)

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": "udf",
            "function": self.name,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "inputs": list(self.inputs),
            "outputs": [{"name": f.name, "dtype": f.dtype.to_json()} for f in self.outputs],
        }


def transform(
    *, inputs: Sequence[str], outputs: Sequence[Field], version: int = 1, name: str | None = None
) -> Callable[[Callable[[pa.Table], Mapping[str, Any]]], Udf]:
    """Declare a Python transform (see the module docs). ``name`` defaults to the function's name.

    Example: ``@transform(inputs=["user:spend_7d", "request:amount"], outputs=[Field("ratio", Float64)],
    version=1)`` on ``def ratio(t): return {"ratio": pc.divide(t["amount"], t["spend_7d"])}``.
    """
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidArgumentError(f"transform: version must be a positive int, got {version!r}")
    ins = list(inputs)
    cols = [_input(r, "transform input")[1] for r in ins]
    if not ins or len(set(cols)) != len(cols):
        raise InvalidArgumentError(
            f"transform: inputs must be a non-empty list whose feature / column names differ, got {ins}"
        )
    outs = list(outputs)
    if not outs or not all(isinstance(f, Field) for f in outs):
        raise InvalidArgumentError("transform: outputs must be a non-empty list of Field")

    def wrap(fn: Callable[[pa.Table], Mapping[str, Any]]) -> Udf:
        n = _check_name(name or fn.__name__, "transform")
        udf = Udf(fn, n, ins, outs, version, fingerprint(fn))
        _UDFS[(n, version)] = udf
        return udf

    return wrap


@dataclass(frozen=True)
class TransformView:
    """A named group of transforms (built-in and UDF) and the imputation of their inputs; its outputs are
    requested as ``"name:output"``.

    Example:
        >>> tv = TransformView("txn_features", [log1p("request:amount"), clip("txn:score", 0, 1)])
        >>> tv.output_names
        ['amount_log1p', 'score_clip']
    """

    name: str
    transforms: list[Transform | Udf]
    impute: list[Impute] = field(default_factory=list)
    description: str = ""

    def __init__(
        self,
        name: str,
        transforms: Iterable[Transform | Udf],
        impute: Iterable[Impute] = (),
        description: str = "",
    ) -> None:
        _check_name(name, "transform view")
        ts = list(transforms)
        if not ts or not all(isinstance(t, (Transform, Udf)) for t in ts):
            raise InvalidArgumentError(
                f"transform view {name!r}: transforms must be a non-empty list of built-ins (zscore, clip, "
                "...) or @transform functions"
            )
        imps = list(impute)
        inputs = {r for t in ts for r in _inputs_of(t)}
        for i in imps:
            if not isinstance(i, Impute):
                raise InvalidArgumentError(f"transform view {name!r}: impute must be a list of Impute")
            if i.feature not in inputs:
                raise InvalidArgumentError(
                    f"transform view {name!r}: Impute names {i.feature!r}, which is none of its inputs "
                    f"{sorted(inputs)}"
                )
            if i.strategy == PREVIOUS:
                # The online store keeps the last non-null values of a view's own 'previous' features
                # only; a transform view applied later could not have them for the rows written before.
                raise InvalidArgumentError(
                    f"transform view {name!r}: Impute({i.feature!r}, 'previous') is declared on the feature "
                    "view (FeatureView(..., impute=[Impute(feature, 'previous')])), whose online store keeps "
                    "the last non-null values; the transform view then reads the filled value"
                )
            if i.feature.startswith(REQUEST + ":") and i.strategy != "constant":
                raise InvalidArgumentError(
                    f"transform view {name!r}: {i.feature!r} is a request-time value with no statistics "
                    "artifact; impute it with a constant"
                )
        if len({i.feature for i in imps}) != len(imps):
            raise InvalidArgumentError(f"transform view {name!r}: an input has two Impute entries")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "transforms", ts)
        object.__setattr__(self, "impute", imps)
        object.__setattr__(self, "description", description)
        outs = self.output_names
        if len(set(outs)) != len(outs):
            raise InvalidArgumentError(
                f"transform view {name!r}: output names {outs} repeat; give name= to tell them apart"
            )

    def __hash__(self) -> int:  # definitions go in sets and dict keys; the name identifies them
        return hash((type(self).__name__, self.name))

    @property
    def output_names(self) -> list[str]:
        return [o for t in self.transforms for o in _outputs_of(t)]

    def to_spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "transforms": [t.to_spec() for t in self.transforms],
            "impute": [i.to_spec() for i in self.impute],
        }


def _inputs_of(t: Transform | Udf) -> list[str]:
    return [t.input] if isinstance(t, Transform) else list(t.inputs)


def _outputs_of(t: Transform | Udf) -> list[str]:
    return [t.output] if isinstance(t, Transform) else [f.name for f in t.outputs]


# ---- apply: checking a definition against the registry and reading its artifacts --------------------------


def _artifact(data: Mapping[str, Any], view: str, version: int, feature: str, what: str) -> dict[str, Any]:
    arts = data.get("statistics", {}).get(view, {})
    if str(version) not in arts:
        raise UnknownFeatureError(
            f"{what} uses statistics artifact {version} of view {view!r}, which does not exist (it has "
            f"{sorted(int(v) for v in arts)}); run store.compute_statistics({view!r}) first"
        )
    feats = arts[str(version)]["features"]
    if feature not in feats:
        raise UnknownFeatureError(
            f"{what}: statistics artifact {version} of view {view!r} does not cover feature {feature!r}; it "
            f"covers {sorted(feats)}"
        )
    return dict(feats[feature])


def _feature_dtype(data: Mapping[str, Any], ref: str, what: str) -> DType | None:
    """The dtype of a ``view:feature`` input (None for a request-time one), checking that it exists."""
    view, feat = parse_ref(ref)
    if view == REQUEST:
        return None
    v = data["feature_views"].get(view)
    if v is None:
        raise UnknownFeatureError(
            f"{what} reads {ref!r}, but there is no feature view {view!r}; apply it first"
        )
    aggs = v["spec"].get("aggregations")
    if aggs:
        # An event view serves its aggregates (skewless.events), typed by function and column.
        cols = {f["name"]: f["dtype"] for f in v["spec"]["schema"]}
        for a in aggs:
            if a["name"] == feat:
                return dtype_from_name(aggregate_dtype(a["function"], cols[a["column"]]))
    else:
        for f in v["spec"]["schema"]:
            if f["name"] == feat:
                return dtype_from_name(f["dtype"])
    raise UnknownFeatureError(f"{what} reads {ref!r}, but view {view!r} has no feature {feat!r}")


def resolve_impute(
    data: Mapping[str, Any], view: str, imp: Impute, dtype: DType, what: str
) -> dict[str, Any]:
    """The stored spec of ``imp``: its fill value read from its artifact (or its constant), fitted to
    ``dtype``."""
    w = f"{what}: Impute({imp.feature!r}, {imp.strategy!r})"
    if imp.strategy == PREVIOUS:
        return imp.to_spec()  # no value: the feature's own last non-null one, per key
    if imp.strategy == "constant":
        value = imp.value
    else:
        assert imp.stats is not None
        feature = parse_ref(imp.feature)[1] if ":" in imp.feature else imp.feature
        stats = _artifact(data, view, imp.stats, feature, w)
        value = stats.get(FROM_STATS[imp.strategy])
        if value is None:
            raise InvalidArgumentError(
                f"{w}: statistics artifact {imp.stats} of view {view!r} has no {imp.strategy} for it (no "
                "values, or a dtype without one)"
            )
    return {**imp.to_spec(), "value": fit_value(value, dtype, w)}


def resolve_view_spec(spec: dict[str, Any], data: Mapping[str, Any], fv: FeatureView) -> dict[str, Any]:
    """A feature view's spec with the values of its Impute entries read from their artifacts."""
    if not fv.impute:
        return spec
    what = f"feature view {fv.name!r}"
    spec["impute"] = [
        resolve_impute(data, fv.name, i, fv.get_field(i.feature).dtype, what) for i in fv.impute
    ]
    return spec


def _check_input_type(t: Transform, dtype: DType | None, what: str) -> None:
    if dtype is None:
        return  # a request-time value: the engine checks its type per request
    if t.kind == "one_hot":
        cats = t.params["categories"]
        want = ("String",) if isinstance(cats[0], str) else ("Int32", "Int64")
        if dtype.name not in want:
            raise DtypeError(f"{what}: {t.input!r} is {dtype!r}, but the categories are {cats!r}")
    elif dtype.name not in _NUMERIC:
        raise DtypeError(f"{what}: {t.input!r} is {dtype!r}; {t.kind} reads numbers")


def resolve_transform_view(tv: TransformView, data: Mapping[str, Any]) -> dict[str, Any]:
    """The spec of ``tv`` to store: every input checked against the registry, every statistic read from
    its artifact. Raises UnknownFeatureError / DtypeError / IncompatibleChangeError; changes nothing."""
    if tv.name in data["feature_views"]:
        raise InvalidArgumentError(
            f"transform view {tv.name!r} has the name of a feature view; references 'name:feature' must name "
            "one thing: rename it"
        )
    spec = tv.to_spec()
    out = []
    for t, ts in zip(tv.transforms, spec["transforms"], strict=True):
        what = f"transform view {tv.name!r}, output(s) {_outputs_of(t)}"
        dtypes = [_feature_dtype(data, r, what) for r in _inputs_of(t)]
        if isinstance(t, Udf):
            out.append(ts)
            continue
        _check_input_type(t, dtypes[0], what)
        if t.stats is not None:
            view, feat = parse_ref(t.input)
            if view == REQUEST:
                raise InvalidArgumentError(
                    f"{what}: {t.input!r} is a request-time value; {t.kind} needs the statistics artifact "
                    "of a view's feature"
                )
            st = _artifact(data, view, t.stats, feat, what)
            keys = ("mean", "stddev_samp") if t.kind == "zscore" else ("min", "max")
            vals = [st.get(k) for k in keys]
            if any(v is None for v in vals):
                raise InvalidArgumentError(
                    f"{what}: statistics artifact {t.stats} of view {view!r} has no {keys} for {feat!r} (too "
                    "few values)"
                )
            ts["params"] = (
                {"mean": vals[0], "std": vals[1]} if t.kind == "zscore" else {"min": vals[0], "max": vals[1]}
            )
        ts["dtype"] = _builtin_dtype(t).to_json()
        out.append(ts)
    spec["transforms"] = out
    imps = []
    for i in tv.impute:
        what = f"transform view {tv.name!r}"
        dtype = _feature_dtype(data, i.feature, what)
        view = parse_ref(i.feature)[0]
        if dtype is None:
            imps.append({**i.to_spec()})  # a request-time constant: its type is the request's
        else:
            imps.append(resolve_impute(data, view, i, dtype, what))
    spec["impute"] = imps
    # Every artifact read above exists; the program compiles now, so a bad parameter (a zero standard
    # deviation) is refused at apply, not at the first request.
    _check_program(out, imps)
    old = data.get("transform_views", {}).get(tv.name)
    if old is not None:
        for o in old["spec"]["transforms"]:
            for n in spec["transforms"]:
                if (
                    o["kind"] == n["kind"] == "udf"
                    and o["function"] == n["function"]
                    and o["version"] == n["version"]
                    and o["fingerprint"] != n["fingerprint"]
                ):
                    raise IncompatibleChangeError(
                        f"transform view {tv.name!r}: the code of UDF {n['function']!r} changed but its "
                        f"version is still {n['version']}; bump version= so training sets and served vectors "
                        "made with the old code are not mistaken for the new"
                    )
    return spec


def _builtin_dtype(t: Transform) -> DType:
    if t.kind == "bucketize":
        return Int32
    if t.kind == "one_hot":
        return Array(Float64, len(t.params["categories"]))
    return Float64


def _all_inputs(transforms: Sequence[Mapping[str, Any]]) -> list[str]:
    refs: dict[str, None] = {}
    for t in transforms:
        for r in [t["input"]] if t["kind"] != "udf" else t["inputs"]:
            refs[r] = None
    return list(refs)


# ---- compiling a request -------------------------------------------------------------------------------


def _param(spec: Mapping[str, Any]) -> Any:
    p = spec["params"]
    kind = spec["kind"]
    if kind == "zscore":
        return (p["mean"], p["std"])
    if kind == "min_max_scale":
        return (p["min"], p["max"])
    if kind == "clip":
        return (p["lo"], p["hi"])
    if kind == "bucketize":
        return list(p["boundaries"])
    if kind == "one_hot":
        return list(p["categories"])
    return None


def _fill_value(value: Any, dtype: DType | None) -> pa.Array:
    return pa.array([value], dtype.arrow if dtype is not None else None)


def _check_program(transforms: Sequence[Mapping[str, Any]], imps: Sequence[Mapping[str, Any]]) -> None:
    """Compiles the fills and built-ins of one transform view in the engine, which raises its typed
    error for a bad parameter (the program is compiled again, with the request's other columns, per
    reader or retrieval)."""
    col = {r: i for i, r in enumerate(_all_inputs(transforms))}
    base = len(col)
    nodes: list[tuple[str, str, int, Any]] = []
    for i in imps:
        ref = i["feature"]
        nodes.append((ref, "fill", col[ref], _fill_value(i["value"], None)))
        col[ref] = base + len(nodes) - 1
    for t in transforms:
        if t["kind"] != "udf":
            nodes.append((t["output"], t["kind"], col[t["input"]], _param(t)))
    _core.TransformProgram(base, nodes)


class Compiled(NamedTuple):
    """A request compiled for the engine: what to look up / join (``plan``: views and features, in
    order; ``request_columns``; ``previous``), the engine ``program`` over the ``n_features`` columns
    (plan features, then previous values) then the request columns, the columns the engine stage
    returns (``select``, named ``names``, looked up from plan part ``source``; ``imputable``: whether a
    fill is in its lineage), then the UDFs to run
    (``(udf, positions of its inputs in select, output refs)``) and the final outputs."""

    plan: Plan
    request_columns: list[str]
    #: The hidden inputs of the ``previous`` strategy: (view, feature) whose last non-null value is read
    #: (offline a join against the rows where it is not null; online its :func:`previous_store`), program
    #: inputs after the plan's features and before the request columns, counted in ``n_features``.
    previous: list[tuple[FeatureView, str]]
    n_features: int
    program: Any
    select: list[int]
    names: list[str]
    source: list[int | None]
    imputable: list[bool]
    udfs: list[tuple[Udf, list[int], list[str]]]
    #: Each output in order: (name, position in ``select``, "") or (name, -1 - UDF index, UDF output).
    final: list[tuple[str, int, str]]
    #: The reference of each output of ``final`` (``"view:feature"`` or ``"transform_view:output"``), for
    #: the served-feature log (skewless.lineage).
    refs: list[str]


def _udf(spec: Mapping[str, Any], tv: str) -> Udf:
    key = (spec["function"], int(spec["version"]))
    udf = _UDFS.get(key)
    if udf is None:
        raise UnknownFeatureError(
            f"transform view {tv!r} runs UDF {key[0]!r} version {key[1]}, which is not defined in this "
            "process; import the module that defines it"
        )
    if udf.fingerprint != spec["fingerprint"]:
        raise IncompatibleChangeError(
            f"transform view {tv!r}: the code of UDF {key[0]!r} version {key[1]} differs from the code "
            "applied; bump its version and apply again (or restore the applied code)"
        )
    return udf


def spec_outputs(spec: Mapping[str, Any]) -> list[str]:
    """The output names of a transform view's registry spec, in declared order."""
    return [
        o
        for t in spec["transforms"]
        for o in ([t["output"]] if t["kind"] != "udf" else [f["name"] for f in t["outputs"]])
    ]


def _producing(spec: Mapping[str, Any], outputs: set[str]) -> list[Mapping[str, Any]]:
    """The transforms of transform view ``spec`` that make any of ``outputs`` (a UDF makes all of its
    outputs at once), in the spec's order."""
    return [
        t
        for t in spec["transforms"]
        if (t["output"] in outputs if t["kind"] != "udf" else any(f["name"] in outputs for f in t["outputs"]))
    ]


def compile_request(
    registry: Registry, features: Sequence[str] | FeatureService, full_feature_names: bool
) -> Compiled | None:
    """The compiled form of a request, or None when it has no transform and no imputation (the plain
    paths serve it unchanged)."""
    if isinstance(features, FeatureService):
        refs = list(features.features)
    else:
        try:
            refs = [] if isinstance(features, str) else name_list(features, "features")
        except InvalidArgumentError:
            refs = []
    tviews = registry.data.get("transform_views", {})
    if not any(isinstance(r, str) and r.count(":") == 1 and parse_ref(r)[0] in tviews for r in refs):
        plan = resolve(registry, features)
        if not any(fv.impute for fv, _ in plan):
            return None
    plain: list[str] = []
    wanted: list[tuple[str, str]] = []  # (kind "plain" / view name, ref or output)
    needed: dict[str, None] = {}
    requests: dict[str, None] = {}
    specs: dict[str, dict[str, Any]] = {}
    chosen_outs: dict[str, set[str]] = {}
    for r in refs:
        view, feat = parse_ref(r)
        if view in tviews:
            spec = specs.setdefault(view, tviews[view]["spec"])
            outs = spec_outputs(spec)
            chosen = outs if feat == "*" else [feat]
            for o in chosen:
                if o not in outs:
                    raise UnknownFeatureError(f"transform view {view!r} has no output {o!r}; it has {outs}")
                wanted.append((view, o))
                chosen_outs.setdefault(view, set()).add(o)
        else:
            plain.append(r)
            wanted.append(("", r))
    # Only the transforms whose outputs the request names run, and only their inputs are read.
    runs = {view: _producing(spec, chosen_outs[view]) for view, spec in specs.items()}
    for ts in runs.values():
        for t in ts:
            for i in [t["input"]] if t["kind"] != "udf" else t["inputs"]:
                (requests if i.startswith(REQUEST + ":") else needed)[i] = None
    plan = resolve(registry, plain + [r for r in needed if r not in plain]) if plain or needed else []
    # Program inputs: every plan feature in plan order, then the request columns.
    inputs: dict[str, int] = {}
    dtypes: dict[str, DType | None] = {}
    part_of: dict[str, int] = {}
    for pi, (fv, feats) in enumerate(plan):
        for f in feats:
            inputs[f"{fv.name}:{f}"] = len(inputs)
            dtypes[f"{fv.name}:{f}"] = fv.feature_dtype(f)
            part_of[f"{fv.name}:{f}"] = pi
    previous: list[tuple[FeatureView, str]] = []
    for fv, _ in plan:
        for imp in fv.impute:
            if imp.strategy == PREVIOUS and f"{fv.name}:{imp.feature}" in inputs:
                inputs[f"{fv.name}:{imp.feature}#previous"] = len(inputs)
                dtypes[f"{fv.name}:{imp.feature}#previous"] = fv.feature_dtype(imp.feature)
                # Online, each is a plan part after the plan's own.
                part_of[f"{fv.name}:{imp.feature}#previous"] = len(plan) + len(previous)
                previous.append((fv, imp.feature))
    n_features = len(inputs)
    req_cols = [parse_ref(r)[1] for r in requests]
    for r in requests:
        inputs[r] = len(inputs)
        dtypes[r] = None
    nodes: list[tuple[str, str, int, Any]] = []
    imputed_cols: set[int] = set()
    # View-level imputation: the feature's column everywhere it is read.
    col = dict(inputs)
    for fv, _ in plan:
        for imp in fv.impute:
            ref = f"{fv.name}:{imp.feature}"
            if ref in col and imp.strategy == PREVIOUS:
                nodes.append((ref, "fill_from", col[ref], inputs[f"{ref}#previous"]))
                col[ref] = len(inputs) + len(nodes) - 1
                imputed_cols.add(col[ref])
            elif ref in col:
                nodes.append((ref, "fill", col[ref], _fill_value(imp.value, dtypes[ref])))
                col[ref] = len(inputs) + len(nodes) - 1
                imputed_cols.add(col[ref])
    view_cols = dict(col)
    tv_out: dict[tuple[str, str], int] = {}
    udfs: list[tuple[Mapping[str, Any], str, list[int], list[str]]] = []
    for view, spec in specs.items():
        local = dict(view_cols)
        for imp in spec["impute"]:
            ref = imp["feature"]
            if ref not in local:
                continue  # read by no transform this request runs
            nodes.append((ref, "fill", local[ref], _fill_value(imp["value"], dtypes[ref])))
            local[ref] = len(inputs) + len(nodes) - 1
            imputed_cols.add(local[ref])
        for t in runs[view]:
            if t["kind"] == "udf":
                udfs.append(
                    (
                        t,
                        view,
                        [local[i] for i in t["inputs"]],
                        [f"{view}:{f['name']}" for f in t["outputs"]],
                    )
                )
                continue
            nodes.append((t["output"], t["kind"], local[t["input"]], _param(t)))
            tv_out[(view, t["output"])] = len(inputs) + len(nodes) - 1
    program = _core.TransformProgram(len(inputs), nodes)
    # Which columns descend from a fill: a built-in of a filled column is imputable too.
    imputable = set(imputed_cols)
    for k, (_, kind, src, _) in enumerate(nodes):
        if kind != "fill" and src in imputable:
            imputable.add(len(inputs) + k)
    source_of: dict[int, int | None] = {i: part_of.get(r) for r, i in inputs.items()}
    for k, (_, _, src, _) in enumerate(nodes):
        source_of[len(inputs) + k] = source_of[src]
    # Output names, each unique; the UDFs whose outputs are wanted.
    by_out = {o: k for k, (_, _, _, outs) in enumerate(udfs) for o in outs}
    names_out: list[str] = []
    select: list[int] = []
    seen: dict[str, str] = {}
    final: list[tuple[str, int, str]] = []
    run: dict[int, None] = {}
    for view, what in wanted:
        if view == "":
            pv, pf = parse_ref(what)
            fv = registry.feature_view(pv)
            targets = [f for _, fs in resolve(registry, [what]) for f in fs]
            items = [(pv, f, view_cols[f"{pv}:{f}"]) for f in targets]
        else:
            items = [(view, what, tv_out.get((view, what), -1))]
        for v, f, c in items:
            n = f"{v}__{f}" if full_feature_names else f
            if n in seen:
                if seen[n] == f"{v}:{f}":
                    continue
                hint = (
                    ""
                    if full_feature_names
                    else "; pass full_feature_names=True to name columns view__feature"
                )
                raise ColumnClashError(
                    f"output column {n!r} of {v!r} clashes with one from {seen[n]!r}" + hint
                )
            seen[n] = f"{v}:{f}"
            if c >= 0:
                final.append((n, len(select), ""))
                select.append(c)
                names_out.append(n)
            else:
                k = by_out[f"{v}:{f}"]
                run[k] = None
                final.append((n, -1 - k, f))
    # Only the UDFs whose outputs are wanted run; their inputs come back after the columns the engine
    # makes for the response.
    pos = {k: i for i, k in enumerate(run)}
    final = [(n, j if j >= 0 else -1 - pos[-1 - j], f) for n, j, f in final]
    udf_sel: list[tuple[Udf, list[int], list[str]]] = []
    for k in run:
        spec_, view_, cols, outs = udfs[k]
        udf = _udf(spec_, view_)
        idx = []
        for c in cols:
            idx.append(len(select))
            select.append(c)
            names_out.append(f"__udf_in_{len(select)}")
        udf_sel.append((udf, idx, outs))
    return Compiled(
        plan=plan,
        request_columns=req_cols,
        previous=previous,
        n_features=n_features,
        program=program,
        select=select,
        names=names_out,
        source=[source_of[c] for c in select],
        imputable=[c in imputable for c in select],
        udfs=udf_sel,
        final=final,
        refs=[seen[n] for n, _, _ in final],
    )


# ---- running a compiled request ------------------------------------------------------------------------


def request_table(c: Compiled, rows: pa.Table) -> list[pa.ChunkedArray]:
    """The request-time columns of ``c`` from the entity rows (a MissingColumnError names a missing one)."""
    require_request_columns(c, rows.column_names)
    return [rows.column(name) for name in c.request_columns]


def require_request_columns(c: Compiled, present: Container[str]) -> None:
    """Raise MissingColumnError for the first request-time column of ``c`` not in ``present``."""
    for name in c.request_columns:
        if name not in present:
            raise MissingColumnError(
                f"a transform reads the request-time value {REQUEST}:{name}, but the entity rows have no "
                f"column {name!r}; add it"
            )


def _run_udf(udf: Udf, inputs: Sequence[pa.ChunkedArray | pa.Array], n: int) -> list[pa.ChunkedArray]:
    table = pa.table({parse_ref(r)[1]: col for r, col in zip(udf.inputs, inputs, strict=True)})
    got = udf(table)
    if not isinstance(got, Mapping):
        raise DtypeError(f"UDF {udf.name!r} returned {type(got).__name__}, not a mapping of output columns")
    want = [f.name for f in udf.outputs]
    if sorted(got) != sorted(want):
        raise InvalidArgumentError(f"UDF {udf.name!r} returned columns {sorted(got)}; it declares {want}")
    cols = []
    for f in udf.outputs:
        v = got[f.name]
        arr = v if isinstance(v, pa.ChunkedArray) else pa.chunked_array([pa.array(v)])
        if len(arr) != n:
            raise InvalidArgumentError(
                f"UDF {udf.name!r}: output {f.name!r} has {len(arr)} rows, its input {n}"
            )
        try:
            arr = arr.cast(f.dtype.arrow, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DtypeError(f"UDF {udf.name!r}: output {f.name!r} is not {f.dtype!r}: {e}") from None
        cols.append(arr)
    return cols


def finish(c: Compiled, stage: pa.Table, flags: bool) -> list[tuple[str, Any]]:
    """The response's output columns, in order, from the engine stage's table (``c.names`` columns, each
    followed by its ``__imputed`` mask when ``flags``), with the UDFs run on their inputs."""
    step = 2 if flags else 1
    cols = stage.columns
    n = stage.num_rows
    udf_out: dict[int, list[pa.ChunkedArray]] = {}
    for k, (udf, idx, _) in enumerate(c.udfs):
        udf_out[k] = _run_udf(udf, [cols[i * step] for i in idx], n)
    out: list[tuple[str, Any]] = []
    for name, j, field_name in c.final:
        if j >= 0:
            out.append((name, cols[j * step]))
            if flags and c.imputable[j]:
                out.append((f"{name}__imputed", cols[j * step + 1]))
        else:
            k = -1 - j
            pos = [f.name for f in c.udfs[k][0].outputs].index(field_name)
            out.append((name, udf_out[k][pos]))
    return out


def check_strict(columns: Iterable[tuple[str, Any]]) -> None:
    """Raise MissingValueError naming the first output column that holds a null."""
    for name, col in columns:
        if not name.endswith("__imputed") and col.null_count:
            raise MissingValueError(
                f"feature {name!r} has {col.null_count} missing value(s) and no imputation strategy filled "
                "them; declare one (Impute on its view or transform view), or drop strict=True"
            )
