"""The papers' experiments as configs: the registry's public face.

Each model family owns its experiments: `refseg_tf/models/<family>/experiments.py` holds the
family's builders and paper tables and registers one experiment per `experiments/<name>.py`
file when the family is imported. The registry and the recipe helpers the families share are
`refseg_tf.experiment` (a low module: the models import it, it imports neither the models nor
training). This module imports `refseg_tf.models` (so every family has registered) and
re-exports the registry: `get_experiment(name)`, `list_experiments(synthetic=None)`,
`register_experiment`, `EXPERIMENTS`, `synthetic(model, **model_overrides)` and the shared
helpers.

Every `experiments/<name>.py` is one line, `return experiments.get_experiment("<name>")`, with
the row's docstring; every config carries `paper` (the source table and the numbers it reports).

A family's builders and tables are attributes of this module too (`experiments.rrn("unc")`,
`experiments.lts(...)`, `experiments.asgn(...)`, `experiments.synthetic_rmi()`): a name not
defined here is looked up in the modules of the registered builders (`family_modules()`), so
adding a family adds its names without an edit here.
"""

import sys

import refseg_tf.models  # noqa: F401  (every family registers its experiments on import)
from refseg_tf.experiment import *  # noqa: F401,F403
from refseg_tf.experiment import EXPERIMENTS


def family_modules():
    """The modules that define the registered experiments' builders, in registration order."""
    modules = []
    for experiment in EXPERIMENTS.values():
        module = sys.modules[experiment.builder.__module__]
        if module not in modules and module.__name__ != __name__:
            modules.append(module)
    return modules


def __getattr__(name):
    if not name.startswith("__"):
        for module in family_modules():
            if name in vars(module):
                return vars(module)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
