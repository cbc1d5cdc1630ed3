"""The classifier method catalog: method JSON files and their hyperpartitions.

A method file names a scikit-learn class and its hyperparameters. Enumerating the
categorical choices of a method yields its *hyperpartitions*: each fixes every
categorical value and leaves only numeric ranges for a tuner. The file format,
the types and the enumeration follow the original ATM catalog (see METHODS.md).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from atm.exceptions import InvalidInputError

__all__ = [
    "METHOD_CODES",
    "HyperPartition",
    "Method",
    "estimator_for",
    "load_method",
    "split_params",
]

METHOD_CODES: tuple[str, ...] = (
    "logreg", "svm", "sgd", "dt", "et", "rf", "gnb",
    "mnb", "bnb", "gp", "pa", "knn", "mlp", "ada",
)  # fmt: skip

METHODS_DIR = Path(__file__).resolve().parent
NUMERIC_TYPES = ("int", "int_exp", "float", "float_exp")
CATEGORICAL_TYPES = ("int_cat", "float_cat", "string", "bool")
ALL_TYPES = NUMERIC_TYPES + CATEGORICAL_TYPES + ("list",)
_TOP_LEVEL_KEYS = {
    "name", "class", "hyperparameters", "root_hyperparameters", "conditional_hyperparameters",
}  # fmt: skip
_LENGTH_RE = re.compile(r"^len\((?P<base>.+)\)$")
_ELEMENT_RE = re.compile(r"^(?P<base>.+)\[(?P<index>\d+)\]$")
# GaussianProcessClassifier takes a kernel object; the catalog names the kernel and
# gives its arguments as separate "helper" hyperparameters.
_GP_KERNEL_ARGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "constant": ("ConstantKernel", ()),
    "rbf": ("RBF", ("length_scale",)),
    "matern": ("Matern", ("length_scale", "nu")),
    "rational_quadratic": ("RationalQuadratic", ("length_scale", "alpha")),
    "exp_sine_squared": ("ExpSineSquared", ("length_scale", "periodicity")),
}
_GP_HELPERS = frozenset({"nu", "length_scale", "alpha", "periodicity"})


@dataclass(frozen=True)
class HyperPartition:
    """One hyperpartition: fixed categorical choices, constants and numeric tunables.

    ``tunables`` pairs each name with its JSON spec, e.g.
    ``("C", {"type": "float_exp", "range": [1e-05, 100000.0]})``.
    """

    method: str
    categoricals: list[tuple[str, Any]]
    constants: list[tuple[str, Any]]
    tunables: list[tuple[str, dict[str, Any]]]

    def fixed_params(self) -> dict[str, Any]:
        """The categorical and constant values of this partition as one dict."""
        return dict(self.categoricals + self.constants)

    def to_json(self) -> dict[str, Any]:
        """This partition as plain JSON-able data (the inverse of :meth:`from_json`)."""
        return {
            "method": self.method,
            "categoricals": [[name, value] for name, value in self.categoricals],
            "constants": [[name, value] for name, value in self.constants],
            "tunables": [[name, json.loads(json.dumps(spec))] for name, spec in self.tunables],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HyperPartition:
        """Rebuild a partition from the output of :meth:`to_json`."""
        try:
            return cls(
                method=str(data["method"]),
                categoricals=[(str(n), v) for n, v in data.get("categoricals", [])],
                constants=[(str(n), v) for n, v in data.get("constants", [])],
                tunables=[(str(n), dict(spec)) for n, spec in data.get("tunables", [])],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InvalidInputError(
                f"not a hyperpartition: {data!r}; expected an object with 'method', "
                "'categoricals', 'constants' and 'tunables' lists of [name, value] pairs",
                field="hyperpartition",
            ) from e


class _Branch(NamedTuple):
    """Working state of the enumeration (immutable, so branches never share lists)."""

    categoricals: tuple[tuple[str, Any], ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()
    tunables: tuple[tuple[str, dict[str, Any]], ...] = ()
    free: tuple[tuple[str, list[Any]], ...] = ()
    active: frozenset[str] = frozenset()


class Method:
    """A validated method definition (one ``atm/methods/*.json`` or a custom file)."""

    def __init__(self, code: str, definition: Any, label: str | None = None) -> None:
        label = label or f"method '{code}'"
        if not isinstance(definition, dict):
            raise _invalid(label, "must be a JSON object")
        unknown = sorted(set(definition) - _TOP_LEVEL_KEYS)
        if unknown:
            raise _invalid(label, f"has unknown key(s) {', '.join(map(repr, unknown))}; "
                           f"allowed keys are: {', '.join(sorted(_TOP_LEVEL_KEYS))}")
        for key, kind in (("name", str), ("class", str), ("hyperparameters", dict),
                          ("root_hyperparameters", list)):
            if key not in definition:
                raise _invalid(label, f"is missing '{key}'")
            if not isinstance(definition[key], kind):
                raise _invalid(label, f"'{key}' must be a JSON {_JSON_KIND[kind]}")
        self.code = code
        self.name: str = definition["name"]
        self.class_path: str = definition["class"]
        self.hyperparameters: dict[str, dict[str, Any]] = {
            str(name): _normalize_spec(label, str(name), spec)
            for name, spec in definition["hyperparameters"].items()
        }
        self.root_hyperparameters: list[str] = list(definition["root_hyperparameters"])
        conditions = definition.get("conditional_hyperparameters", {})
        self.conditional_hyperparameters: dict[str, dict[str, list[str]]] = conditions
        self._cls = _import_class(label, self.class_path)
        self._validate(label)

    def __repr__(self) -> str:
        return f"Method(code={self.code!r}, class_path={self.class_path!r})"

    def estimator_class(self) -> type:
        """The scikit-learn (or compatible) estimator class this method trains."""
        return self._cls

    def get_hyperpartitions(self) -> list[HyperPartition]:
        """Every hyperpartition of this method, in enumeration order."""
        partitions: list[HyperPartition] = []
        self._expand(self._activate(_Branch(), self.root_hyperparameters), partitions)
        return partitions

    # -- enumeration -------------------------------------------------------------------

    def _spec(self, name: str) -> dict[str, Any]:
        """The spec of a parameter, including the pseudo-params of list parameters."""
        if name in self.hyperparameters:
            return self.hyperparameters[name]
        match = _LENGTH_RE.match(name)
        if match:
            lengths = self.hyperparameters[match["base"]]["list_length"]
            return {"type": "int_cat", "values": list(lengths)}
        match = _ELEMENT_RE.match(name)
        return self.hyperparameters[match["base"]]["element"]  # type: ignore[index]

    def _enabled_by(self, name: str, value: Any) -> list[str]:
        """The parameters that choosing ``value`` for ``name`` switches on."""
        match = _LENGTH_RE.match(name)
        if match and name not in self.hyperparameters:
            return [f"{match['base']}[{i}]" for i in range(value)]
        conditions = self.conditional_hyperparameters.get(name, {})
        return [p for key, params in conditions.items() if _key_matches(key, value)
                for p in params]

    def _activate(self, branch: _Branch, names: list[str]) -> _Branch:
        """Sort ``names`` (and what their constant values enable) into ``branch``."""
        cats, consts, tunes = branch.categoricals, branch.constants, branch.tunables
        free, active = list(branch.free), set(branch.active)
        pending, i = list(names), 0
        while i < len(pending):
            name, i = pending[i], i + 1
            if name in active:
                continue
            active.add(name)
            spec = self._spec(name)
            if spec["type"] == "list":
                pending.insert(i, f"len({name})")
                continue
            choices = spec.get("values", spec.get("range"))
            if "values" in spec and len(choices) > 1:
                free.append((name, list(choices)))
            elif len(choices) == 1 or choices[0] == choices[1]:
                consts += ((name, choices[0]),)
                pending[i:i] = self._enabled_by(name, choices[0])
            else:
                tunes += ((name, json.loads(json.dumps(spec))),)
        return _Branch(cats, consts, tunes, tuple(free), frozenset(active))

    def _expand(self, branch: _Branch, out: list[HyperPartition]) -> None:
        """Branch on the first free categorical until none is left, then emit."""
        if not branch.free:
            out.append(HyperPartition(self.code, list(branch.categoricals),
                                      list(branch.constants), list(branch.tunables)))
            return
        (name, values), rest = branch.free[0], branch.free[1:]
        for value in values:
            fixed = branch._replace(categoricals=branch.categoricals + ((name, value),),
                                    free=rest)
            self._expand(self._activate(fixed, self._enabled_by(name, value)), out)

    # -- validation ----------------------------------------------------------------------

    def _validate(self, label: str) -> None:
        defined = self.hyperparameters
        seen: set[str] = set()
        for name in self.root_hyperparameters:
            if not isinstance(name, str) or name not in defined:
                raise _invalid(label, f"root hyperparameter {name!r} is not defined in "
                               "'hyperparameters'")
            if name in seen:
                raise _invalid(label, f"root hyperparameter '{name}' is listed twice")
            seen.add(name)
        if not isinstance(self.conditional_hyperparameters, dict):
            raise _invalid(label, "'conditional_hyperparameters' must be a JSON object")
        reachable = set(self.root_hyperparameters)
        for name, conditions in self.conditional_hyperparameters.items():
            spec = defined.get(name)
            if spec is None or "values" not in spec:
                raise _invalid(label, f"conditional hyperparameter '{name}' must be a "
                               "categorical defined in 'hyperparameters'")
            if not isinstance(conditions, dict):
                raise _invalid(label, f"conditions of '{name}' must map values to lists")
            for key, params in conditions.items():
                if not any(_key_matches(key, v) for v in spec["values"]):
                    raise _invalid(label, f"condition '{name}'={key!r} matches none of its "
                                   f"values {spec['values']}")
                if not isinstance(params, list) or any(p not in defined for p in params):
                    raise _invalid(label, f"condition '{name}'={key!r} must list defined "
                                   f"hyperparameters, got {params!r}")
                reachable.update(params)
        accepted = _init_params(self._cls)
        if accepted is None:
            return
        is_gp = _is_gaussian_process(self._cls)
        for name in sorted(reachable):
            if name.startswith("_") or (is_gp and name in _GP_HELPERS) or name in accepted:
                continue
            raise _invalid(label, f"hyperparameter '{name}' is not a parameter of "
                           f"{self.class_path}")


_JSON_KIND = {str: "string", dict: "object", list: "array"}


def _invalid(label: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"{label} {problem}", field="method")


def _key_matches(key: str, value: Any) -> bool:
    """Whether a condition key (always a string in JSON) selects ``value``."""
    if value is None:
        return key.lower() in ("none", "null")
    if isinstance(value, bool):
        return key.lower() == str(value).lower()
    return key == str(value)


def _cast(label: str, name: str, type_: str, value: Any) -> Any:
    """Cast one JSON value to the declared type (``null`` stays None)."""
    if value is None:
        return None
    if type_ == "string":
        return str(value)
    if type_ == "bool":
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if type_.startswith("float"):
            return float(value)
        if float(value).is_integer():
            return int(value)
    raise _invalid(label, f"hyperparameter '{name}': {value!r} is not a valid {type_}")


def _normalize_spec(label: str, name: str, spec: Any, element: bool = False) -> dict[str, Any]:
    """Validate one hyperparameter spec and cast its values to the declared type."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise _invalid(label, f"hyperparameter '{name}' must be an object with a 'type'")
    type_ = spec["type"]
    if type_ not in ALL_TYPES or (element and type_ == "list"):
        raise _invalid(label, f"hyperparameter '{name}' has unknown type {type_!r}; types "
                       f"are: {', '.join(ALL_TYPES[:-1] if element else ALL_TYPES)}")
    if type_ == "list":
        lengths = spec.get("list_length")
        if (not isinstance(lengths, list) or not lengths
                or any(type(n) is not int or n < 0 for n in lengths)):
            raise _invalid(label, f"list hyperparameter '{name}' needs 'list_length', a "
                           "non-empty list of non-negative integers")
        inner = _normalize_spec(label, f"{name}[i]", spec.get("element"), element=True)
        return {"type": "list", "list_length": lengths, "element": inner}
    key = "range" if type_ in NUMERIC_TYPES else "values"
    raw = spec.get(key)
    if not isinstance(raw, list) or not raw or (key == "range" and len(raw) > 2):
        size = "one or two numbers" if key == "range" else "a non-empty list"
        raise _invalid(label, f"hyperparameter '{name}' of type {type_} needs '{key}': {size}")
    values = [_cast(label, name, type_, v) for v in raw]
    if key == "range":
        if None in values or values[0] > values[-1]:
            raise _invalid(label, f"hyperparameter '{name}' has an invalid range {raw}")
        if type_.endswith("_exp") and values[0] <= 0:
            raise _invalid(label, f"hyperparameter '{name}' of type {type_} needs a range "
                           f"of positive numbers, got {raw}")
    return {"type": type_, key: values}


def _import_class(label: str, class_path: str) -> type:
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as e:
        raise _invalid(label, f"class '{class_path}' cannot be imported ({e})") from e
    if not inspect.isclass(cls):
        raise _invalid(label, f"'{class_path}' is not a class")
    return cls


def _init_params(cls: type) -> set[str] | None:
    """Names ``cls(...)`` accepts, or None when it takes ``**kwargs``."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters} - {"self"}


def _is_gaussian_process(cls: type) -> bool:
    from sklearn.gaussian_process import GaussianProcessClassifier

    return issubclass(cls, GaussianProcessClassifier)


@cache
def _load_builtin(code: str) -> Method:
    with open(METHODS_DIR / f"{code}.json", encoding="utf-8") as f:
        return Method(code, json.load(f))


def _known_methods_hint() -> str:
    return f"known methods are: {', '.join(METHOD_CODES)} (or give a path to a method JSON file)"


def load_method(code_or_path: str | os.PathLike[str]) -> Method:
    """Load a catalog method by code (``"svm"``) or a custom method from a ``.json`` path."""
    text = os.fspath(code_or_path)
    if text in METHOD_CODES:
        return _load_builtin(text)
    path = Path(text)
    if path.suffix.lower() != ".json" and os.sep not in text and "/" not in text:
        raise InvalidInputError(f"unknown method {text!r}; {_known_methods_hint()}",
                                field="method")
    if not path.is_file():
        raise InvalidInputError(f"method file {text!r} does not exist; {_known_methods_hint()}",
                                field="method")
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"method file {text!r} is not valid JSON: {e.msg} at line "
                                f"{e.lineno} column {e.colno}", field="method") from e
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInputError(f"method file {text!r} cannot be read: {e}",
                                field="method") from e
    return Method(text, definition, label=f"method file {text!r}")


def _as_method(method: Method | str) -> Method:
    return method if isinstance(method, Method) else load_method(method)


def _to_python(value: Any) -> Any:
    """Numpy scalars (and containers of them) as plain Python values."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_python(v) for v in value)
    return value


def _coerce(spec: dict[str, Any] | None, value: Any) -> Any:
    """Integral floats become ints for int-typed parameters (tuners may send 12.0)."""
    if spec is not None and spec["type"].startswith("int") and isinstance(value, float) \
            and value.is_integer():
        return int(value)
    return value


def split_params(method: Method | str, params: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split flat parameter values into (estimator kwargs, ``_``-prefixed ATM switches).

    ``len(x)``/``x[i]`` pseudo-params become a tuple ``x``, and for Gaussian processes the
    kernel name and its helper params become a kernel object.
    """
    method = _as_method(method)
    kwargs: dict[str, Any] = {}
    switches: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    elements: dict[str, dict[int, Any]] = {}
    for name, value in params.items():
        name, value = str(name), _to_python(value)
        if name.startswith("_"):
            switches[name] = value
        elif (match := _LENGTH_RE.match(name)) and name not in method.hyperparameters:
            lengths[match["base"]] = int(value)
        elif (match := _ELEMENT_RE.match(name)) and name not in method.hyperparameters:
            elements.setdefault(match["base"], {})[int(match["index"])] = value
        else:
            kwargs[name] = _coerce(method.hyperparameters.get(name), value)
    for base in sorted(set(lengths) | set(elements)):
        items = elements.get(base, {})
        length = lengths.get(base, len(items))
        missing = [f"{base}[{i}]" for i in range(length) if i not in items]
        if missing:
            raise InvalidInputError(f"hyperparameter '{base}' has length {length} but no "
                                    f"value for {', '.join(missing)}", field=base)
        element_spec = method.hyperparameters.get(base, {}).get("element")
        kwargs[base] = tuple(_coerce(element_spec, items[i]) for i in range(length))
    cls = method.estimator_class()
    if _is_gaussian_process(cls) and isinstance(kwargs.get("kernel"), str):
        kwargs["kernel"] = _gp_kernel(kwargs)
    accepted = _init_params(cls)
    unknown = sorted(set(kwargs) - accepted) if accepted is not None else []
    if unknown:
        raise InvalidInputError(f"hyperparameter '{unknown[0]}' is not a parameter of "
                                f"{method.class_path} (method '{method.code}')", field=unknown[0])
    return kwargs, switches


def _gp_kernel(kwargs: dict[str, Any]) -> Any:
    """Pop the kernel name and its helper params from ``kwargs``; return the kernel."""
    from sklearn.gaussian_process import kernels

    name = kwargs.pop("kernel")
    helpers = {k: kwargs.pop(k) for k in sorted(_GP_HELPERS) if k in kwargs}
    if name not in _GP_KERNEL_ARGS:
        raise InvalidInputError(f"unknown Gaussian process kernel {name!r}; kernels are: "
                                f"{', '.join(_GP_KERNEL_ARGS)}", field="kernel")
    class_name, accepted = _GP_KERNEL_ARGS[name]
    extra = sorted(set(helpers) - set(accepted))
    if extra:
        raise InvalidInputError(f"Gaussian process kernel {name!r} takes no '{extra[0]}'; "
                                f"it takes: {', '.join(accepted) or 'nothing'}", field=extra[0])
    return getattr(kernels, class_name)(**helpers)


def estimator_for(
    method: Method | str, params: Mapping[str, Any], seed: int | None = None
) -> tuple[Any, dict[str, Any]]:
    """An unfitted estimator for ``params`` plus the ATM switches to apply around it.

    ``seed`` becomes ``random_state`` when the estimator takes one and ``params`` do not.
    """
    method = _as_method(method)
    kwargs, switches = split_params(method, params)
    cls = method.estimator_class()
    accepted = _init_params(cls)
    if seed is not None and "random_state" not in kwargs and "random_state" in (accepted or ()):
        kwargs["random_state"] = seed
    try:
        return cls(**kwargs), switches
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"cannot build {method.class_path} with {kwargs!r}: {e}",
                                field="hyperparameters") from e
