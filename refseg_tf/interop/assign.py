"""The assignment machinery: checkpoint variables -> model weights, all checked, then assigned.

A format fills an `AssignmentPlan`: it `take`s checkpoint variables (by the authors' names),
converts them (transposes, gate reorders) and `assign`s the results to Keras variables, naming
the layer. Nothing is written to the model until `apply()`, which first raises ONE
`ValueError` listing every problem found, each naming the file, the checkpoint variable and
the layer:

- missing: a variable the format needs is not in the checkpoint;
- mis-shaped: a variable (or its converted value) does not fit the layer's weight;
- unexpected: a checkpoint variable nobody took and no `ignore` pattern covers (optimizer
  slots such as `.../Momentum` and `global_step` are the usual ignored training state);
- unfilled: a model weight no checkpoint variable reached (`require_complete`).

So an import either fills every weight from the file or changes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

logger = logging.getLogger(__name__)

# The training state a TF1 `Saver()` writes besides the weights: MomentumOptimizer / Adam slots,
# Adam's beta powers, the global step. Formats pass these (or their own) as `ignore`.
TF1_TRAINING_STATE = (
    r"(^|/)global_step$",
    r"/(Momentum|Adam|Adam_1|RMSProp|RMSProp_1|Adagrad|ExponentialMovingAverage)$",
    r"(^|/)beta[12]_power(_\d+)?$",
)

# Keras bookkeeping variables that hold no learned value (dropout seed generators).
_UNLEARNED = re.compile(r"seed_generator")


@dataclasses.dataclass
class _Planned:
    target: object
    value: np.ndarray
    source: str
    layer: str


class AssignmentPlan:
    """Collects checkpoint -> model assignments, checks them all, then assigns them all.

    Args:
        variables: the `CheckpointVariables` of the file.
        ignore: regular expressions (`re.search`) of checkpoint variables that are training
            state, not weights: they are counted and logged, never assigned, never an error.

    Example:
        >>> plan = AssignmentPlan(read_checkpoint(path), ignore=TF1_TRAINING_STATE)
        >>> kernel = plan.take("classifier/mlp_l2/weights", layer="score")
        >>> plan.assign(model.score_conv.kernel, kernel, source="classifier/mlp_l2/weights",
        ...             layer="score")
        >>> plan.require_complete(model)
        >>> plan.apply()   # raises ValueError listing every problem, or assigns everything
    """

    def __init__(self, variables, ignore=TF1_TRAINING_STATE):
        self.variables = variables
        self.path = variables.path
        self.ignore = tuple(re.compile(pattern) for pattern in ignore)
        self.used = set()
        self.problems = []
        self._planned = []
        self._targets = set()
        self._complete = []

    # ---- reading ------------------------------------------------------------------------
    def has(self, name) -> bool:
        """Whether the checkpoint holds `name`."""
        return name in self.variables

    def first_present(self, names):
        """The first of `names` the checkpoint holds (alternative namings), else None."""
        for name in names:
            if name in self.variables:
                return name
        return None

    def take(self, name, layer, shape=None):
        """Reads checkpoint variable `name` for `layer` and marks it used.

        `shape`: the shape the format expects (checked here; `assign` checks the converted
        value again). A missing or mis-shaped variable is recorded as a problem and None is
        returned, so one `apply()` reports every problem of the file at once.
        """
        if name not in self.variables:
            self.problems.append(f"missing variable {name!r} (for layer {layer!r})")
            return None
        self.used.add(name)
        found = self.variables.shapes[name]
        if shape is not None and tuple(found) != tuple(int(d) for d in shape):
            self.problems.append(
                f"variable {name!r} has shape {found}, layer {layer!r} needs {tuple(shape)}"
            )
            return None
        try:
            return np.asarray(self.variables.read(name), dtype=np.float32)
        except ValueError as error:
            self.problems.append(str(error).replace(f"{self.path}: ", "", 1))
            return None

    # ---- writing ------------------------------------------------------------------------
    def assign(self, target, value, source, layer):
        """Plans `target.assign(value)`; `source` names the checkpoint variable(s).

        None values (a problem already recorded by `take`) are skipped. A value whose shape
        differs from the target's is recorded as a problem, naming source and layer.
        """
        if value is None:
            self._targets.add(id(target))
            return
        value = np.asarray(value, dtype=np.float32)
        needed = tuple(int(d) for d in target.shape)
        if tuple(value.shape) != needed:
            self.problems.append(
                f"variable {source!r} gives shape {value.shape}, layer {layer!r} weight "
                f"{_path(target)!r} needs {needed}"
            )
            self._targets.add(id(target))
            return
        if id(target) in self._targets:
            self.problems.append(
                f"layer {layer!r} weight {_path(target)!r} assigned twice (last from {source!r})"
            )
            return
        self._targets.add(id(target))
        self._planned.append(_Planned(target, value, str(source), str(layer)))

    def require_complete(self, model, exclude=()):
        """At `apply()`, every weight of `model` must have been assigned (else: a problem).

        `exclude`: regular expressions of weight paths that may keep their values.
        """
        self._complete.append((model, tuple(re.compile(p) for p in exclude)))

    def unexpected(self) -> list:
        """Checkpoint variables neither taken nor covered by `ignore`, sorted."""
        return [
            name
            for name in self.variables.names
            if name not in self.used and not any(p.search(name) for p in self.ignore)
        ]

    def ignored(self) -> list:
        return [
            name
            for name in self.variables.names
            if name not in self.used and any(p.search(name) for p in self.ignore)
        ]

    def check(self) -> list:
        """Every problem found so far (and the final checks); [] when `apply` will succeed."""
        problems = list(self.problems)
        problems += [f"unexpected variable {name!r} (no layer takes it)" for name in self.unexpected()]
        for model, exclude in self._complete:
            for weight in model.weights:
                path = _path(weight)
                if id(weight) in self._targets or _UNLEARNED.search(path):
                    continue
                if any(p.search(path) for p in exclude):
                    continue
                problems.append(f"model weight {path!r} gets no checkpoint variable")
        return problems

    def apply(self) -> dict:
        """Raises a ValueError listing every problem, or assigns every planned value.

        Returns:
            `{"assigned": n weights, "variables": n checkpoint variables used, "ignored":
            n training-state variables skipped}`.
        """
        problems = self.check()
        if problems:
            shown = "; ".join(problems[:20])
            more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise ValueError(
                f"{self.path}: {len(problems)} problem(s), nothing assigned: {shown}{more}."
            )
        for planned in self._planned:
            planned.target.assign(planned.value)
        ignored = self.ignored()
        if ignored:
            logger.info("%s: %d training-state variables skipped (e.g. %s).", self.path,
                        len(ignored), ignored[0])
        return {"assigned": len(self._planned), "variables": len(self.used), "ignored": len(ignored)}


def _path(variable) -> str:
    return getattr(variable, "path", None) or getattr(variable, "name", "?")
