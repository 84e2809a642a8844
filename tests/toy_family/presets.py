"""The toy family's preset `toy`, registered on import."""

from refseg_tf.models.registry import Preset, register_preset
from tests.toy_family.model import ToySegmenter

TOY_PRESETS = {
    "toy": Preset(
        name="toy",
        model_class=ToySegmenter,
        backbone="resnet101_os8",
        kwargs=dict(feature="C5", embedding_dim=16),
        tiny_kwargs=dict(embedding_dim=8),
        reference="none: a test family",
    ),
}

for _preset in TOY_PRESETS.values():
    register_preset(_preset)
