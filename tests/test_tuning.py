"""Tuners propose values inside the ranges and learn from history; gridding is exhaustive
and ends; selectors pick among the offered partitions and honour k_window."""

import math
from collections import Counter

import numpy as np
import pytest

from atm.constants import SELECTORS, TUNERS
from atm.exceptions import InvalidInputError
from atm.tuning import propose, select_partition

TUNABLES = [
    ("C", {"type": "float_exp", "range": [1e-05, 100000.0]}),
    ("max_iter", {"type": "int_exp", "range": [10, 10000]}),
    ("n_neighbors", {"type": "int", "range": [1, 20]}),
    ("l1_ratio", {"type": "float", "range": [0.0, 1.0]}),
]


def _random_history(n, seed=1):
    """Values inside the ranges (log-uniform for *_exp) with an arbitrary score."""
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(n):
        values = {
            "C": float(10 ** rng.uniform(-5, 5)),
            "max_iter": int(round(10 ** rng.uniform(1, 4))),
            "n_neighbors": int(rng.integers(1, 21)),
            "l1_ratio": float(rng.uniform(0, 1)),
        }
        score = 1.0 / (1.0 + abs(math.log10(values["C"]))) + 0.1 * values["l1_ratio"]
        history.append((values, score))
    return history


def _assert_inside_ranges(values):
    assert set(values) == {name for name, _ in TUNABLES}
    for name, spec in TUNABLES:
        low, high = spec["range"]
        value = values[name]
        assert low <= value <= high, (name, value)
        if spec["type"].startswith("int"):
            assert type(value) is int, (name, value, type(value))
        else:
            assert type(value) is float, (name, value, type(value))


@pytest.mark.parametrize("tuner", TUNERS)
@pytest.mark.parametrize("n_history", [0, 1, 6])
def test_proposals_stay_inside_the_ranges_with_plain_types(tuner, n_history):
    np.random.seed(0)
    history = _random_history(n_history)
    for _ in range(5):
        _assert_inside_ranges(propose(tuner, TUNABLES, history, gridding=0, r_minimum=2))


def test_exp_types_are_searched_on_a_log_scale():
    np.random.seed(1)
    proposals = [propose("uniform", TUNABLES, []) for _ in range(300)]
    # log-uniform over [1e-5, 1e5]: about half below 1; a linear draw would put ~0 there.
    below_one = sum(p["C"] < 1.0 for p in proposals) / len(proposals)
    assert 0.35 < below_one < 0.65
    # int_exp over [10, 10000]: about a third below 100 (linear: ~1 %).
    below_hundred = sum(p["max_iter"] < 100 for p in proposals) / len(proposals)
    assert 0.2 < below_hundred < 0.47
    # and every integer of a small int range is reachable
    assert {p["n_neighbors"] for p in proposals} == set(range(1, 21))


def test_a_partition_without_tunables_gets_an_empty_proposal():
    assert propose("gp", [], []) == {}


def test_unknown_tuner_is_rejected():
    with pytest.raises(InvalidInputError, match="unknown tuner 'bogus'"):
        propose("bogus", TUNABLES, [])


# -- the GP tuners learn from history --------------------------------------------------

TOY = [("x", {"type": "float", "range": [0.0, 10.0]})]
PEAK = 7.2


def _toy_score(x):
    return math.exp(-((x - PEAK) ** 2) / 2.0)


TOY_HISTORY = [({"x": x}, _toy_score(x)) for x in np.arange(0.5, 10.0, 1.0)]  # 10 records


def _hits_near_peak(tuner, r_minimum, n=20, seed=3):
    np.random.seed(seed)
    hits = 0
    for _ in range(n):
        x = propose(tuner, TOY, TOY_HISTORY, r_minimum=r_minimum)["x"]
        assert 0.0 <= x <= 10.0
        hits += abs(x - PEAK) < 1.0
    return hits


@pytest.mark.parametrize("tuner", ["gp", "gp_ei", "gp_eivel"])
def test_gp_tuners_propose_near_the_best_region_once_they_have_r_minimum_records(tuner):
    # A uniform draw lands within 1.0 of the peak 20 % of the time.
    uniform_hits = _hits_near_peak("uniform", r_minimum=2)
    model_hits = _hits_near_peak(tuner, r_minimum=2)
    assert uniform_hits <= 9
    assert model_hits >= 15
    assert model_hits > uniform_hits


@pytest.mark.parametrize("tuner", ["gp", "gp_ei"])
def test_gp_tuners_stay_uniform_below_r_minimum_records(tuner):
    # 10 records < r_minimum 11: the GP is not used yet, proposals are uniform.
    assert _hits_near_peak(tuner, r_minimum=11) <= 9


# -- gridding ----------------------------------------------------------------------------

GRID_TUNABLES = [
    ("C", {"type": "float_exp", "range": [1e-4, 1.0]}),
    ("n_neighbors", {"type": "int", "range": [0, 20]}),
]
GRID_C = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # 5 points, evenly spaced in log10
GRID_N = [0, 10, 20]  # 3 points


@pytest.mark.parametrize("tuner", TUNERS)
def test_gridding_proposes_only_grid_points_until_all_are_recorded(tuner):
    np.random.seed(4)
    history, seen = [], set()
    for _ in range(len(GRID_C)):
        values = propose(tuner, [GRID_TUNABLES[0]], history, gridding=5)
        assert values is not None
        assert any(values["C"] == pytest.approx(g) for g in GRID_C)
        key = round(math.log10(values["C"]))
        assert key not in seen, "a grid point was proposed twice"
        seen.add(key)
        history.append((values, float(len(history))))
    assert seen == {-4, -3, -2, -1, 0}
    assert propose(tuner, [GRID_TUNABLES[0]], history, gridding=5) is None


@pytest.mark.parametrize("tuner", ["uniform", "gp"])
def test_gridding_over_two_axes_covers_the_product_then_returns_none(tuner):
    np.random.seed(5)
    history, seen = [], set()
    for _ in range(len(GRID_N) * len(GRID_N)):
        values = propose(tuner, GRID_TUNABLES, history, gridding=3)
        assert values is not None
        assert type(values["n_neighbors"]) is int and values["n_neighbors"] in GRID_N
        assert any(values["C"] == pytest.approx(g) for g in (1e-4, 1e-2, 1.0))
        point = (round(math.log10(values["C"])), values["n_neighbors"])
        assert point not in seen
        seen.add(point)
        history.append((values, 0.1 * len(history)))
    assert len(seen) == 9
    assert propose(tuner, GRID_TUNABLES, history, gridding=3) is None


# -- selectors ---------------------------------------------------------------------------

MIXED_SCORES = {11: [], 12: [0.5], 13: [0.2, 0.9, 0.4], 14: [0.7, 0.7], 15: [0.1, 0.3, 0.2, 0.6]}
MIXED_METHODS = {11: "dt", 12: "dt", 13: "knn", 14: "logreg", 15: "knn"}


@pytest.mark.parametrize("selector", SELECTORS)
def test_each_selector_picks_only_among_the_offered_partitions(selector):
    import random

    random.seed(6)
    np.random.seed(6)
    picks = Counter()
    for _ in range(60):
        choice = select_partition(selector, {k: list(v) for k, v in MIXED_SCORES.items()},
                                  k_window=2, methods=MIXED_METHODS)
        assert type(choice) is int
        assert choice in MIXED_SCORES
        picks[choice] += 1
    if selector == "uniform":
        assert set(picks) == set(MIXED_SCORES)  # every partition gets its chance


@pytest.mark.parametrize("selector", SELECTORS)
def test_selectors_do_not_modify_the_callers_scores(selector):
    scores = {1: [0.1, 0.2, 0.3, 0.4, 0.5], 2: [0.5, 0.4, 0.3, 0.2, 0.1]}
    before = {k: list(v) for k, v in scores.items()}
    select_partition(selector, scores, k_window=2, methods={1: "dt", 2: "knn"})
    assert scores == before


def test_a_single_choice_is_returned_and_no_choice_is_an_error():
    assert select_partition("ucb1", {42: [0.3]}, k_window=3, methods={42: "dt"}) == 42
    with pytest.raises(InvalidInputError):
        select_partition("ucb1", {}, k_window=3, methods={})
    with pytest.raises(InvalidInputError, match="unknown selector 'bogus'"):
        select_partition("bogus", {1: [], 2: []}, k_window=3, methods={})


def test_bestk_judges_a_partition_by_its_k_window_best_scores():
    # equal pull counts, so UCB1's exploration term is equal and the reward decides
    scores = {1: [0.95, 0.1, 0.1, 0.1, 0.1], 2: [0.6, 0.6, 0.6, 0.6, 0.6]}
    assert select_partition("bestk", scores, k_window=1, methods={}) == 1
    assert select_partition("bestk", scores, k_window=5, methods={}) == 2


def test_recentk_judges_a_partition_by_its_k_window_most_recent_scores():
    # scores are oldest first: partition 1 improved lately, partition 2 got worse
    scores = {1: [0.1, 0.1, 0.1, 0.9, 0.9, 0.9], 2: [0.9, 0.9, 0.9, 0.1, 0.1, 0.1]}
    assert select_partition("recentk", scores, k_window=3, methods={}) == 1
    # mirrored histories: the mirrored choice
    reversed_scores = {1: [0.9, 0.9, 0.9, 0.1, 0.1, 0.1], 2: [0.1, 0.1, 0.1, 0.9, 0.9, 0.9]}
    assert select_partition("recentk", reversed_scores, k_window=3, methods={}) == 2


def test_recentkvel_prefers_the_partition_that_improves_lately():
    scores = {1: [0.1, 0.2, 0.4, 0.7], 2: [0.5, 0.6, 0.6, 0.6]}
    assert select_partition("recentkvel", scores, k_window=2, methods={}) == 1


def test_purebestkvel_first_fills_up_the_partition_with_fewest_scores():
    scores = {1: [0.9, 0.9, 0.9], 2: [0.1], 3: [0.5, 0.5, 0.5]}
    assert select_partition("purebestkvel", scores, k_window=3, methods={}) == 2


def test_hieralg_chooses_a_method_first_then_one_of_its_partitions():
    # Per partition, UCB1 picks 6 (the best mean, every partition has 2 pulls).
    # By method, "dt" has 12 pulls and "knn" only 2, so UCB1 over methods explores knn
    # (0.2 + sqrt(2 ln 14 / 2) > 0.57 + sqrt(2 ln 14 / 12)), then knn's only partition.
    scores = {1: [0.5, 0.5], 2: [0.5, 0.5], 3: [0.5, 0.5], 4: [0.5, 0.5], 5: [0.5, 0.5],
              6: [0.9, 0.9], 7: [0.2, 0.2]}
    methods = {1: "dt", 2: "dt", 3: "dt", 4: "dt", 5: "dt", 6: "dt", 7: "knn"}
    assert select_partition("ucb1", scores, k_window=3, methods=methods) == 6
    picks = {select_partition("hieralg", scores, k_window=3, methods=methods) for _ in range(10)}
    assert picks == {7}
