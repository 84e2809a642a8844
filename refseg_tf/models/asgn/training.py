"""ASGN's alternating D / G training step (TensorFlow only: `tf.GradientTape`, `tf.distribute`).

Kept out of the Keras model code (`model.py`); `ASGN.train_step` calls `asgn_train_step`.
The Keras 3 facts it relies on (Keras 3.15 source): a Keras `Loss` with the default reduction
divides by `num_replicas_in_sync`, a hand-written mean does not; `fit` averages the returned
values over replicas; only the compiled optimizer is wrapped for loss scaling.
"""

import keras
import tensorflow as tf


def _replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def _regularization(layer, replicas):
    """The per-replica share of `layer`'s regularisation losses (0.0 without any)."""
    losses = layer.losses
    if not losses:
        return tf.constant(0.0)
    return tf.add_n([tf.cast(loss, tf.float32) for loss in losses]) / replicas


def _apply(optimizer, tape, loss, variables):
    """Scaled-loss gradients of `loss` applied to `variables` (the optimizer unscales them)."""
    gradients = tape.gradient(loss, variables)
    optimizer.apply(gradients, variables)


def discriminator_update(model, image, mask, logits, replicas):
    """One discriminator step on the detached prediction; returns the unscaled D loss."""
    variables = model.discriminator.trainable_variables
    with tf.GradientTape() as tape:
        d_loss = model.discriminator_loss(image, mask, logits, training=True)
        total = d_loss / replicas + _regularization(model.discriminator, replicas)
        scaled = model.discriminator_optimizer.scale_loss(total)
    _apply(model.discriminator_optimizer, tape, scaled, variables)
    return d_loss


def asgn_train_step(model, data):
    """One ASGN step: D update on `sg(P)`, then G update on `L_adv + λ (L_CE + R_G)` (or CE alone).

    Returns the metrics dict of `fit` (`loss`, `d_loss`, `g_adv`, `g_ce` and the compiled
    metrics).
    """
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    replicas = _replicas()
    image = x["image"]
    generator_variables = model.generator.trainable_variables
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        # A Keras Loss: already divided by the replica count.
        cross_entropy = model._cross_entropy(y, logits, sample_weight=sample_weight)
        regularization = _regularization(model.generator, replicas)
        if model.adversarial_training:
            with tape.stop_recording():
                d_loss = discriminator_update(model, image, y, logits, replicas)
            g_adv = model.generator_adversarial_term(image, logits, training=True)
            # λ scales the generator's weight decay with its CE (the base recipe's balance).
            weight = model.cross_entropy_weight
            total = g_adv / replicas + weight * (cross_entropy + regularization)
        else:
            d_loss = tf.constant(0.0)
            g_adv = tf.constant(0.0)
            total = cross_entropy + regularization
        scaled = model.optimizer.scale_loss(total)
    _apply(model.optimizer, tape, scaled, generator_variables)

    model.d_loss_tracker.update_state(d_loss)
    model.g_adv_tracker.update_state(g_adv)
    model.g_ce_tracker.update_state(cross_entropy * replicas)
    loss_tracker = getattr(model, "_loss_tracker", None)
    if loss_tracker is not None:
        loss_tracker.update_state(total * replicas)
    return model.compute_metrics(x, y, logits, sample_weight)
