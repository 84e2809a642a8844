"""refseg_tf.models: referring-segmentation models, the preset registry and `build_model(config)`.

Each model family is a package (`lstm_cnn`, `rrn`, `rmi`, `lts`) that registers its presets when
imported; the one import per family below is all this module knows about a family. The
registry is `refseg_tf.models.registry`, the builders `refseg_tf.models.factory`.
"""

import refseg_tf.backbones  # noqa: F401  (registers the backbone classes for load_model)
from refseg_tf.models import recipes
from refseg_tf.models.base import ReferringSegmenter, build_with_dummy_inputs, dummy_inputs
from refseg_tf.models.factory import build_model, build_preset
from refseg_tf.models.registry import (
    PRESETS,
    SIZES,
    InputContract,
    Preset,
    check_input_contract,
    get_preset,
    list_presets,
    preset_kwargs,
    register_preset,
)

# One registering import per family: it registers the family's presets and re-exports its
# public names (its `__all__`).
from refseg_tf.models.lstm_cnn import *  # noqa: E402,F401,F403
from refseg_tf.models.rrn import *  # noqa: E402,F401,F403
from refseg_tf.models.rmi import *  # noqa: E402,F401,F403
from refseg_tf.models.lts import *  # noqa: E402,F401,F403
from refseg_tf.models.asgn import *  # noqa: E402,F401,F403

__all__ = sorted(
    name
    for name, value in globals().items()
    if not name.startswith("_") and not isinstance(value, type(recipes))
) + ["recipes"]
