"""Feature references: ``"view:feature"`` strings (or a FeatureService) resolved to the views that hold
them, and the output column each one gets. Retrieval and serving resolve requests the same way.

Example:
    >>> parse_ref("user_stats:spend")
    ('user_stats', 'spend')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._arrow import name_list
from .definitions import FeatureService, FeatureView
from .errors import ColumnClashError, InvalidArgumentError
from .events import aggregate_names, aggregation

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["Plan", "parse_ref", "resolve", "output_names"]

#: The views a request reads, in first-mention order, each with its requested features.
Plan = list[tuple[FeatureView, list[str]]]


def parse_ref(ref: str) -> tuple[str, str]:
    """``"view:feature"`` as ``(view, feature)``; ``feature`` may be ``*`` (every feature)."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise InvalidArgumentError(f"feature reference {ref!r} is not of the form 'view:feature'")
    view, feat = ref.split(":")
    return view, feat


def resolve(registry: Registry, features: Sequence[str] | FeatureService) -> Plan:
    """The views and features a request names (unknown ones raise UnknownFeatureError)."""
    if isinstance(features, FeatureService):
        refs = features.features
    else:
        try:
            refs = [] if isinstance(features, str) else name_list(features, "features")
        except InvalidArgumentError:
            refs = []
        if not refs:
            raise InvalidArgumentError(
                "features must be a non-empty list of 'view:feature' strings (list, tuple, pandas or polars "
                f"Series...) or a FeatureService; got {features!r}"
            )
    # Insertion-ordered dicts as ordered sets: a view of thousands of features resolves in linear time.
    plan: dict[str, dict[str, None]] = {}
    views: dict[str, FeatureView] = {}
    for ref in refs:
        view, feat = parse_ref(ref)
        fv = views.get(view)
        if fv is None:
            fv = views[view] = registry.feature_view(view)
        if fv.is_event_view:
            # An event view serves its aggregates; its raw columns are not features.
            wanted = aggregate_names(fv) if feat == "*" else [aggregation(fv, feat).name]
        else:
            wanted = fv.feature_names if feat == "*" else [fv.get_field(feat).name]
        plan.setdefault(view, {}).update(dict.fromkeys(wanted))
    if not plan:
        raise InvalidArgumentError("no features requested")
    return [(views[v], list(fs)) for v, fs in plan.items()]


def output_names(plan: Plan, full: bool, taken: Sequence[str]) -> dict[tuple[str, str], str]:
    """The output column of each (view, feature): the feature's name, or ``view__feature`` when
    ``full``; a clash with another feature or with a column in ``taken`` is a ColumnClashError."""
    names: dict[tuple[str, str], str] = {}
    seen: dict[str, str] = {c: "entity_df" for c in taken}
    for fv, feats in plan:
        for f in feats:
            n = f"{fv.name}__{f}" if full else f
            if n in seen:
                hint = "" if full else "; pass full_feature_names=True to name columns view__feature"
                raise ColumnClashError(
                    f"output column {n!r} of view {fv.name!r} clashes with one from {seen[n]}" + hint
                )
            seen[n] = f"view {fv.name!r}"
            names[(fv.name, f)] = n
    return names
