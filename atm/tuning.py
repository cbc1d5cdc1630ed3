"""Adapters between ATM's hyperpartitions and BTB (baytune) tuners and selectors.

Tunable specs are plain JSON (``{"type": "float_exp", "range": [lo, hi]}``);
``*_exp`` types are searched in log10 space. With ``gridding = g > 0`` every
numeric tunable becomes a grid of ``g`` points and a partition whose grid is
used up reports exhaustion (the worker then marks it ``gridding_done``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from baytune import selection
from baytune.tuning import (
    BooleanHyperParam,
    CategoricalHyperParam,
    FloatHyperParam,
    GPEiTuner,
    GPTuner,
    IntHyperParam,
    StopTuning,
    Tunable,
    UniformTuner,
)

from atm.constants import SELECTORS, TUNERS
from atm.exceptions import InvalidInputError

SELECTOR_CLASSES = {
    "uniform": selection.Uniform,
    "ucb1": selection.UCB1,
    "bestk": selection.BestKReward,
    "bestkvel": selection.BestKVelocity,
    "purebestkvel": selection.PureBestKVelocity,
    "recentk": selection.RecentKReward,
    "recentkvel": selection.RecentKVelocity,
    "hieralg": selection.HierarchicalByAlgorithm,
}

# The GP refit is cubic in the history; past this many records the tuner sees
# the best half and the most recent half (keeps proposals fast on long runs).
MAX_TUNER_HISTORY = 60


def check_tuner(code: str) -> str:
    if code not in TUNERS:
        raise InvalidInputError(
            f"unknown tuner {code!r}; known tuners are: {', '.join(TUNERS)}", field="tuner"
        )
    return code


def check_selector(code: str) -> str:
    if code not in SELECTORS:
        raise InvalidInputError(
            f"unknown selector {code!r}; known selectors are: {', '.join(SELECTORS)}",
            field="selector",
        )
    return code


# -- tunables -----------------------------------------------------------------

def _grid(spec: dict[str, Any], points: int) -> list[Any]:
    kind = spec["type"]
    low, high = spec["range"]
    if kind.endswith("_exp"):
        values = np.geomspace(low, high, points)
    else:
        values = np.linspace(low, high, points)
    if kind.startswith("int"):
        return sorted({int(round(v)) for v in values})
    return [float(v) for v in values]


def _hyperparam(spec: dict[str, Any], gridding: int) -> Any:
    kind = spec["type"]
    if "values" in spec:
        values = list(spec["values"])
        if kind == "bool" and sorted(map(bool, values)) == [False, True]:
            return BooleanHyperParam()
        return CategoricalHyperParam(values)
    low, high = spec["range"]
    if gridding > 0:
        return CategoricalHyperParam(_grid(spec, gridding))
    if kind == "int":
        return IntHyperParam(min=int(low), max=int(high))
    if kind == "float":
        return FloatHyperParam(min=float(low), max=float(high))
    if kind in ("float_exp", "int_exp"):
        return FloatHyperParam(min=math.log10(low), max=math.log10(high))
    raise InvalidInputError(f"unknown tunable type {kind!r}")


def _to_search_space(spec: dict[str, Any], value: Any, gridding: int) -> Any:
    if gridding == 0 and "range" in spec and spec["type"].endswith("_exp"):
        return math.log10(max(float(value), 1e-300))
    return value


def _from_search_space(spec: dict[str, Any], value: Any, gridding: int) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if gridding == 0 and "range" in spec and spec["type"].endswith("_exp"):
        value = 10.0 ** float(value)
        low, high = spec["range"]
        value = min(max(value, low), high)
        return int(round(value)) if spec["type"] == "int_exp" else value
    if spec["type"].startswith("int") and value is not None and not isinstance(value, bool):
        return int(value)
    return value


class _GPEiVelocityTuner(GPEiTuner):
    """GP-EI that falls back to a uniform proposal as improvement slows down.

    With probability exp(-100 · mean velocity of the 5 best scores) a proposal
    is drawn uniformly at random instead of by expected improvement.
    """

    def _propose(self, num_proposals: int, allow_duplicates: bool) -> Any:
        scores = np.sort(np.asarray(self.raw_scores, dtype=float).ravel())[::-1][:5]
        if len(scores) >= 2:
            velocity = float(np.mean(-np.diff(scores)))
            if np.random.random() < math.exp(-100.0 * velocity):
                return self._sample(num_proposals, allow_duplicates)
        return super()._propose(num_proposals, allow_duplicates)


def _cap_history(history: Sequence[tuple[dict[str, Any], float]]) -> list[tuple[dict, float]]:
    if len(history) <= MAX_TUNER_HISTORY:
        return list(history)
    half = MAX_TUNER_HISTORY // 2
    recent = list(range(len(history) - half, len(history)))
    older = sorted(range(len(history) - half), key=lambda i: history[i][1], reverse=True)[:half]
    return [history[i] for i in sorted(older + recent)]


def propose(tuner: str, tunables: Sequence[tuple[str, dict[str, Any]]],
            history: Sequence[tuple[dict[str, Any], float]], gridding: int = 0,
            r_minimum: int = 2) -> dict[str, Any] | None:
    """Propose values for a partition's tunables, or None when its grid is used up.

    ``history`` holds (hyperparameter values, score) of the partition's complete
    classifiers; a fresh tuner is fitted on it for every proposal.
    """
    check_tuner(tuner)
    specs = dict(tunables)
    if not specs:
        return {}
    tunable = Tunable({name: _hyperparam(spec, gridding) for name, spec in specs.items()})
    minimum = max(1, int(r_minimum))
    if tuner == "uniform":
        instance = UniformTuner(tunable)
    elif tuner == "gp":
        instance = GPTuner(tunable, min_trials=minimum)
    elif tuner == "gp_ei":
        instance = GPEiTuner(tunable, min_trials=minimum)
    else:
        instance = _GPEiVelocityTuner(tunable, min_trials=minimum)
    usable = [(values, score) for values, score in _cap_history(history)
              if all(name in values for name in specs)]
    if usable:
        trials = [{name: _to_search_space(specs[name], values[name], gridding) for name in specs}
                  for values, _ in usable]
        instance.record(trials, [float(score) for _, score in usable])
    try:
        proposal = instance.propose(1)
    except StopTuning:
        return None
    return {name: _from_search_space(specs[name], proposal[name], gridding) for name in specs}


# -- selectors ----------------------------------------------------------------

def select_partition(selector: str, scores: dict[int, list[float]], k_window: int,
                     methods: dict[int, str]) -> int:
    """Pick the next hyperpartition id from ``{id: [scores oldest first]}``.

    The selector is rebuilt from the current choices on every call, so a
    partition that became errored or done is never picked again.
    """
    check_selector(selector)
    choices = list(scores)
    if not choices:
        raise InvalidInputError("no hyperpartition left to select from")
    if len(choices) == 1:
        return choices[0]
    cls = SELECTOR_CLASSES[selector]
    by_algorithm: dict[str, list[int]] = {}
    for choice in choices:
        by_algorithm.setdefault(methods.get(choice, "?"), []).append(choice)
    offered = {"choices": choices, "k": k_window, "by_algorithm": by_algorithm}
    accepted = inspect.signature(cls.__init__).parameters
    instance = cls(**{name: value for name, value in offered.items() if name in accepted})
    if selector == "recentk":
        # BTB's RecentKReward keeps the *first* k scores of each list; give it the
        # newest first so that it judges by the k most recent ones (the original
        # ATM passed oldest first and so kept the oldest k).
        choice = instance.select({c: list(s)[::-1] for c, s in scores.items()})
    else:
        choice = instance.select({c: list(s) for c, s in scores.items()})
    return int(choice.item() if isinstance(choice, np.generic) else choice)
