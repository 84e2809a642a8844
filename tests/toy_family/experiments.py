"""The toy family's experiments: its synthetic recipe and one registered experiment."""

from refseg_tf.experiment import register_experiment, register_synthetic_recipe, synthetic


@register_synthetic_recipe("toy")
def _toy_recipe(config, model, model_overrides):
    del model
    config.model.backbone.name = "resnet101_os8"
    config.model.threshold = 0.4  # off the 0.5 default: the test follows it to the export
    for key, value in model_overrides.items():
        config.model[key] = value


@register_experiment("synthetic_toy", synthetic=True)
def synthetic_toy():
    """The toy model on the synthetic data."""
    return synthetic("toy")
