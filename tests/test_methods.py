"""The method catalog: partition counts, the JSON format, parameter splitting, and that
every hyperpartition of every method trains on real data for values inside its ranges."""

import json
import math
import random

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.gaussian_process import kernels
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from atm.exceptions import InvalidInputError
from atm.methods import (
    METHOD_CODES,
    HyperPartition,
    estimator_for,
    load_method,
    split_params,
)

EXPECTED_COUNTS = {
    "logreg": 6, "svm": 4, "sgd": 24, "dt": 2, "et": 2, "rf": 2, "gnb": 1,
    "mnb": 1, "bnb": 1, "gp": 8, "pa": 4, "knn": 24, "mlp": 60, "ada": 1,
}  # fmt: skip
ALL_PARTITIONS = [
    (code, index)
    for code in METHOD_CODES
    for index in range(len(load_method(code).get_hyperpartitions()))
]


# -- catalog shape -------------------------------------------------------------------------


def test_method_codes_are_the_fourteen_catalog_methods():
    assert METHOD_CODES == tuple(EXPECTED_COUNTS)


@pytest.mark.parametrize("code", METHOD_CODES)
def test_each_method_enumerates_its_documented_partition_count(code):
    method = load_method(code)
    assert method.code == method.name == code
    partitions = method.get_hyperpartitions()
    assert len(partitions) == EXPECTED_COUNTS[code]
    assert all(p.method == code for p in partitions)
    # no two partitions make the same categorical choices
    assert len({json.dumps(p.categoricals) for p in partitions}) == len(partitions)


def test_catalog_has_140_partitions_in_total():
    assert sum(len(load_method(c).get_hyperpartitions()) for c in METHOD_CODES) == 140


@pytest.mark.parametrize("code", METHOD_CODES)
def test_partitions_round_trip_through_json(code):
    for partition in load_method(code).get_hyperpartitions():
        wire = json.loads(json.dumps(partition.to_json()))
        assert HyperPartition.from_json(wire) == partition


def test_catalog_values_are_cast_to_their_declared_types():
    logreg = load_method("logreg").get_hyperpartitions()
    assert {dict(p.categoricals)["fit_intercept"] for p in logreg} == {True, False}
    assert [dict(p.categoricals).get("dual") for p in logreg].count(True) == 2
    gp = {json.dumps(p.categoricals): p for p in load_method("gp").get_hyperpartitions()}
    assert '[["kernel", "matern"], ["nu", 1.5]]' in gp
    sgd = load_method("sgd").get_hyperpartitions()[0]
    assert ("class_weight", None) in sgd.constants and ("n_jobs", 1) in sgd.constants


def test_no_catalog_method_uses_all_cores():
    for code in METHOD_CODES:
        for partition in load_method(code).get_hyperpartitions():
            assert partition.fixed_params().get("n_jobs", 1) == 1


# -- custom method files ------------------------------------------------------------------

CUSTOM = {
    "name": "tiny_mlp",
    "class": "sklearn.neural_network.MLPClassifier",
    "hyperparameters": {
        "solver": {"type": "string", "values": ["lbfgs", "adam"]},
        "hidden_layer_sizes": {
            "type": "list", "list_length": [1, 2], "element": {"type": "int", "range": [4, 8]},
        },
        "alpha": {"type": "float_exp", "range": [1e-4, 1e-2]},
        "beta_1": {"type": "float", "range": [0.8, 0.9]},
        "early_stopping": {"type": "bool", "values": ["true"]},
        "validation_fraction": {"type": "float", "range": [0.2]},
        "max_iter": {"type": "int", "range": [50]},
        "activation": {"type": "string", "values": ["relu"]},
        "tol": {"type": "float", "range": [0.1, 0.2]},
        "_scale": {"type": "bool", "values": [True]},
    },
    "root_hyperparameters": [
        "solver", "hidden_layer_sizes", "alpha", "early_stopping", "max_iter", "activation",
        "_scale",
    ],
    "conditional_hyperparameters": {
        "solver": {"adam": ["beta_1"]},
        "early_stopping": {"true": ["validation_fraction"]},
    },
}


def write_json(tmp_path, data, name="custom.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_custom_method_file_enumerates_root_conditional_list_and_constants(tmp_path):
    path = write_json(tmp_path, CUSTOM)
    method = load_method(path)
    assert (method.code, method.name) == (path, "tiny_mlp")
    assert method.estimator_class().__name__ == "MLPClassifier"
    alpha = ("alpha", {"type": "float_exp", "range": [1e-4, 1e-2]})
    beta_1 = ("beta_1", {"type": "float", "range": [0.8, 0.9]})
    elements = [(f"hidden_layer_sizes[{i}]", {"type": "int", "range": [4, 8]}) for i in (0, 1)]
    constants = [("early_stopping", True), ("validation_fraction", 0.2), ("max_iter", 50),
                 ("activation", "relu"), ("_scale", True)]

    def partition(solver, length, tunables):
        categoricals = [("solver", solver), ("len(hidden_layer_sizes)", length)]
        return HyperPartition(path, categoricals, constants, tunables)

    assert method.get_hyperpartitions() == [
        partition("lbfgs", 1, [alpha, elements[0]]),
        partition("lbfgs", 2, [alpha, *elements]),
        partition("adam", 1, [alpha, beta_1, elements[0]]),
        partition("adam", 2, [alpha, beta_1, *elements]),
    ]  # "tol" is defined but neither root nor enabled by a condition: ignored


def test_custom_method_partitions_train(tmp_path):
    method = load_method(write_json(tmp_path, CUSTOM))
    X, y = load_iris(return_X_y=True)
    params = {"len(hidden_layer_sizes)": 2, "hidden_layer_sizes[0]": 5,
              "hidden_layer_sizes[1]": 6, "alpha": 1e-3, "beta_1": 0.85}
    params.update(method.get_hyperpartitions()[3].fixed_params())
    estimator, switches = estimator_for(method, params, seed=0)
    assert switches == {"_scale": True}
    assert estimator.get_params()["hidden_layer_sizes"] == (5, 6)
    assert estimator.fit(X, y).score(X, y) > 0.3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"class": None}, "is missing 'class'"),
        ({"hyperparameters": {"alpha": {"type": "floaty", "range": [1, 2]}}},
         "hyperparameter 'alpha' has unknown type 'floaty'; types are: int, int_exp"),
        ({"root_hyperparameters": ["solver", "momentum"]},
         "root hyperparameter 'momentum' is not defined in 'hyperparameters'"),
        ({"root_hyperparameters": ["solver", "solver"]}, "'solver' is listed twice"),
        ({"class": "sklearn.nope.Classifier"},
         "class 'sklearn.nope.Classifier' cannot be imported"),
        ({"conditions": {}}, "unknown key(s) 'conditions'; allowed keys are:"),
        ({"hyperparameters": {**CUSTOM["hyperparameters"],
                              "n_iter": {"type": "int", "range": [5]}},
          "root_hyperparameters": ["n_iter"]},
         "hyperparameter 'n_iter' is not a parameter of sklearn.neural_network.MLPClassifier"),
        ({"hyperparameters": {**CUSTOM["hyperparameters"],
                              "alpha": {"type": "float_exp", "range": [0, 1]}}},
         "hyperparameter 'alpha' of type float_exp needs a range of positive numbers"),
        ({"conditional_hyperparameters": {"solver": {"sgd": ["beta_1"]}}},
         "condition 'solver'='sgd' matches none of its values"),
    ],
)
def test_invalid_custom_method_files_are_rejected_with_a_clear_message(tmp_path, change, message):
    data = {**CUSTOM, **change}
    data = {key: value for key, value in data.items() if value is not None}
    with pytest.raises(InvalidInputError, match="^method file '.*custom.json' ") as info:
        load_method(write_json(tmp_path, data))
    assert message in str(info.value)


def test_unknown_method_code_names_it_and_lists_the_known_codes():
    with pytest.raises(InvalidInputError) as info:
        load_method("lgr")
    assert str(info.value) == (
        "unknown method 'lgr'; known methods are: logreg, svm, sgd, dt, et, rf, gnb, mnb, bnb, "
        "gp, pa, knn, mlp, ada (or give a path to a method JSON file)"
    )
    assert info.value.field == "method"


def test_missing_and_malformed_method_files_are_rejected(tmp_path):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(InvalidInputError, match=f"method file '{missing}' does not exist; known"):
        load_method(missing)
    broken = write_json(tmp_path, '{"name": "x",,}')
    with pytest.raises(InvalidInputError, match="is not valid JSON: .* line 1 column 14"):
        load_method(broken)
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        load_method(write_json(tmp_path, "[1, 2]"))


def test_malformed_partition_json_is_rejected():
    with pytest.raises(InvalidInputError, match="not a hyperpartition"):
        HyperPartition.from_json({"categoricals": []})


# -- splitting parameters -------------------------------------------------------------------


def test_split_params_rebuilds_lists_separates_switches_and_converts_numpy():
    params = {"len(hidden_layer_sizes)": np.int64(2), "hidden_layer_sizes[0]": np.int64(12),
              "hidden_layer_sizes[1]": np.float64(40.0), "hidden_layer_sizes[2]": 7,
              "alpha": np.float64(0.001), "solver": "lbfgs", "_scale": np.True_}
    kwargs, switches = split_params("mlp", params)
    assert kwargs == {"hidden_layer_sizes": (12, 40), "alpha": 0.001, "solver": "lbfgs"}
    assert all(type(v) is int for v in kwargs["hidden_layer_sizes"])
    assert type(kwargs["alpha"]) is float
    assert switches == {"_scale": True} and type(switches["_scale"]) is bool


def test_split_params_rejects_missing_list_elements_and_unknown_names():
    with pytest.raises(InvalidInputError,
                       match=r"length 2 but no value for hidden_layer_sizes\[1\]"):
        split_params("mlp", {"len(hidden_layer_sizes)": 2, "hidden_layer_sizes[0]": 3})
    with pytest.raises(InvalidInputError, match="'n_iter' is not a parameter of .*SGDClassifier"):
        split_params("sgd", {"n_iter": 5})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"kernel": "constant"}, kernels.ConstantKernel()),
        ({"kernel": "rbf"}, kernels.RBF()),
        ({"kernel": "matern", "nu": 2.5}, kernels.Matern(nu=2.5)),
        ({"kernel": "rational_quadratic", "length_scale": 0.5, "alpha": 0.2},
         kernels.RationalQuadratic(length_scale=0.5, alpha=0.2)),
        ({"kernel": "exp_sine_squared", "length_scale": 3.0, "periodicity": 2},
         kernels.ExpSineSquared(length_scale=3.0, periodicity=2)),
    ],
)
def test_gp_kernel_names_become_kernel_objects(params, expected):
    kwargs, switches = split_params("gp", {**params, "_scale": True})
    assert set(kwargs) == {"kernel"} and switches == {"_scale": True}
    assert repr(kwargs["kernel"]) == repr(expected)


def test_gp_kernel_rejects_unknown_names_and_foreign_helpers():
    with pytest.raises(InvalidInputError, match="unknown Gaussian process kernel 'linear'"):
        split_params("gp", {"kernel": "linear"})
    with pytest.raises(InvalidInputError, match="kernel 'rbf' takes no 'nu'"):
        split_params("gp", {"kernel": "rbf", "nu": 1.5})


def test_estimator_for_seeds_random_state_only_where_accepted():
    tree, _ = estimator_for("dt", {"criterion": "gini"}, seed=7)
    assert tree.random_state == 7
    assert estimator_for("dt", {"random_state": 3}, seed=7)[0].random_state == 3
    knn, switches = estimator_for(load_method("knn"), {"n_neighbors": 3, "_scale": True}, seed=7)
    assert "random_state" not in knn.get_params() and switches == {"_scale": True}


# -- every partition trains -----------------------------------------------------------------


def sample_tunables(tunables, rng):
    """One value per tunable: uniform, log-uniform for *_exp, random choice for categoricals."""
    values = {}
    for name, spec in tunables:
        if "values" in spec:
            values[name] = rng.choice(spec["values"])
            continue
        low, high = spec["range"]
        if spec["type"].endswith("_exp"):
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        if spec["type"].startswith("int"):
            value = min(max(round(value), low), high)
        values[name] = value
    return values


def corner(tunables, end):
    """Every tunable at the low (end=0) or high (end=-1) edge of its range."""
    return {name: spec["range"][end] for name, spec in tunables if "range" in spec}


@pytest.fixture(scope="module")
def datasets():
    iris = load_iris(return_X_y=True)
    X, y = load_breast_cancer(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, train_size=150, stratify=y, random_state=0)
    return [iris, (X, y)]


def fragile_error(partition):
    """The error a partition may raise at some values inside its ranges (METHODS.md), or None.

    A periodic GP kernel on non-periodic features can make the Laplace approximation's
    Cholesky fail; an MLP trained by plain SGD at a high learning rate can diverge. The
    worker records such a fit as an errored classifier; every other partition must fit at
    every value tried.
    """
    fixed = dict(partition.categoricals)
    if fixed.get("kernel") == "exp_sine_squared":
        return np.linalg.LinAlgError
    if partition.method == "mlp" and fixed.get("solver") == "sgd":
        return ValueError
    return None


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.filterwarnings("ignore:Using the 'liblinear' solver for multiclass:FutureWarning")
@pytest.mark.parametrize(("code", "index"), ALL_PARTITIONS)
def test_every_partition_fits_for_values_inside_its_ranges(datasets, code, index):
    method = load_method(code)
    partition = method.get_hyperpartitions()[index]
    rng = random.Random(f"{code}-{index}")
    samples = [sample_tunables(partition.tunables, rng)]
    samples.append(corner(partition.tunables, 0))
    if code != "mlp":  # three 300-unit layers take half a minute to fit: too slow for CI
        samples.append(corner(partition.tunables, -1))
    unique = {json.dumps(s, sort_keys=True): s for s in samples}.values()
    # Alternate the dataset so both binary and multiclass data meet every method.
    X, y = datasets[index % 2]
    tolerated = fragile_error(partition) or ()
    fits = 0
    for tunable_values in unique:
        params = {**partition.fixed_params(), **tunable_values}
        estimator, switches = estimator_for(method, params, seed=0)
        steps = [("scale", StandardScaler())] if switches.get("_scale") else (
            [("scale", MinMaxScaler())] if switches.get("_scale_minmax") else [])
        pipeline = Pipeline([*steps, (code, estimator)])
        try:
            pipeline.fit(X, y)
        except tolerated:
            continue
        assert len(pipeline.predict(X)) == len(y), params
        fits += 1
    assert fits > 0 or tolerated
