"""What a training checkpoint holds: every weight Keras tracks, as TensorFlow sees it (TF only).

Keras 3 on the TensorFlow backend hides the layers and variables a layer keeps in a list or a
dict (its `TrackedList` / `TrackedDict` attributes, named in `layer._tracked`) from
`tf.train.Checkpoint`: `TFLayer._trackable_children` lists them for SavedModel export only.
A model that holds, say, its ASPP branches in a list therefore wrote training checkpoints
without their batch-norm statistics, and a resumed run silently started those again from their
initial values (LTS: 35.47 -> 26.59 overall IoU on the synthetic set). Trainable weights in
containers (RRN's lateral convolutions, ASGN's discriminator) only came back because the
optimizer, reachable from the model, lists the variables it trains; a checkpoint of the model
alone missed them. `.keras` files were never affected: Keras saves them through its own tracker.

`checkpoint_view(obj)` wraps each Keras layer of a model in a `LayerCheckpointView` whose
dependencies are the layer's own TensorFlow dependencies plus, for each tracked container, a
node named after the attribute whose children are the container's items by index or key
(`laterals/C5/kernel`, `branches/0/...`), the layout TensorFlow uses for its own list and dict
wrappers. Dependencies TensorFlow already saw keep their names, so checkpoints of models
without such containers are unchanged and old ones of those models still restore; old
checkpoints that lack container-held weights are refused on restore (those weights are
missing from them), not silently half-restored.

Example:

    checkpoint = tf.train.Checkpoint(**training_checkpoint_items(model))
"""

import keras
import tensorflow as tf

_Trackable = tf.__internal__.tracking.Trackable


def _container_items(container):
    if isinstance(container, dict):
        return [(str(key), value) for key, value in container.items()]
    if isinstance(container, (list, tuple, set)):
        # Keras' TrackedSet keeps insertion order; a set of layers is keyed by that order.
        return [(str(index), value) for index, value in enumerate(container)]
    return []


def _holds_trackable(value) -> bool:
    if isinstance(value, _Trackable):
        return True
    return any(_holds_trackable(item) for _, item in _container_items(value))


class _DependencyView(_Trackable):
    """A checkpoint node whose dependencies are its subclass's `_trackable_children`."""

    def __init__(self, views):
        self._views = views

    def _lookup_dependency(self, name, cached_dependencies=None):
        dependencies = cached_dependencies
        if dependencies is None:
            dependencies = self._trackable_children()
        return dependencies.get(name)


class _ContainerCheckpointView(_DependencyView):
    """A list or dict of a Keras layer as a checkpoint node: its items by index or key."""

    def __init__(self, container, views):
        super().__init__(views)
        self._container = container

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        return {
            name: self._views.view(item)
            for name, item in _container_items(self._container)
            if _holds_trackable(item)
        }


class LayerCheckpointView(_DependencyView):
    """A Keras layer as `tf.train.Checkpoint` should see it (see the module docstring).

    Args:
        layer: a `keras.layers.Layer` (a model included).
        views: the `CheckpointViews` that made this view; it gives every layer one view, so a
            layer shared by two parents is one checkpoint node.
    """

    def __init__(self, layer, views):
        super().__init__(views)
        self._layer = layer

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # pylint: disable=protected-access
        dependencies = {
            name: self._views.view(child)
            for name, child in self._layer._trackable_children(save_type, **kwargs).items()
        }
        for attribute in getattr(self._layer, "_tracked", ()):
            if attribute in dependencies:
                continue
            container = getattr(self._layer, attribute, None)
            if _holds_trackable(container):
                dependencies[attribute] = self._views.view(container)
        return dependencies


class CheckpointViews:
    """Makes (and remembers) one checkpoint view per Keras layer or tracked container."""

    def __init__(self):
        self._by_id = {}

    def view(self, obj):
        if isinstance(obj, keras.layers.Layer):
            view_class = LayerCheckpointView
        elif isinstance(obj, (dict, list, tuple, set)) and not isinstance(obj, _Trackable):
            view_class = _ContainerCheckpointView
        else:
            return obj  # variables, optimizers, TF data structures: as TensorFlow sees them
        key = id(obj)
        if key not in self._by_id:
            # The object is kept with its view so that its id cannot be reused while cached.
            self._by_id[key] = (obj, view_class(obj, self))
        return self._by_id[key][1]


def checkpoint_view(obj, views=None):
    """`obj` as a training checkpoint should hold it (a view for a Keras layer, else `obj`)."""
    return (views or CheckpointViews()).view(obj)


def training_checkpoint_items(items: dict) -> dict:
    """`tf.train.Checkpoint` keyword items with every Keras layer replaced by its view.

    Args:
        items: named checkpoint objects, e.g. `model.checkpoint_items()`
            (`{"model": model, "optimizer": model.optimizer}`).
    """
    views = CheckpointViews()
    return {name: checkpoint_view(value, views) for name, value in items.items()}
