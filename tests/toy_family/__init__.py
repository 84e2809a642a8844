"""A throw-away model family that lives only in the tests: `import tests.toy_family` registers it.

It is what `docs/design.md`'s "adding a family" checklist asks for, and nothing else: a model
(`model.py`), its preset (`presets.py`) and its experiments (`experiments.py`), with no edit of
shared code. `tests/test_toy_family.py` trains, evaluates, predicts with and exports it.
"""

from tests.toy_family.model import ToySegmenter
from tests.toy_family.presets import TOY_PRESETS
from tests.toy_family import experiments  # noqa: F401  (registers its experiments)

__all__ = ["TOY_PRESETS", "ToySegmenter"]
