"""tf.data pipelines: CIFAR augmentation for training, channel normalisation, batching."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfprune.data.arrays import MEAN, PAD, STD, normalize_np  # noqa: F401 (re-exported)
from tfprune.data.sources import Images


def normalize(x):
    """uint8 (or float 0..255) images -> float32 normalised with the CIFAR-100 channel stats."""
    x = tf.cast(x, tf.float32) / 255.0
    return (x - tf.constant(MEAN)) / tf.constant(STD)


def augment(x, seed):
    """Random crop back to size after 4-pixel zero padding, and a random horizontal flip."""
    h, w = x.shape[0], x.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 2)
    padded = tf.pad(x, [[PAD, PAD], [PAD, PAD], [0, 0]])
    x = tf.image.stateless_random_crop(padded, [h, w, 3], seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(x, seed=seeds[1])


def as_dataset(images: Images, batch_size: int, training: bool = False, seed: int = 0,
               drop_remainder: bool = False) -> tf.data.Dataset:
    """(normalised image, label) batches; shuffled and augmented when `training`."""
    ds = tf.data.Dataset.from_tensor_slices((images.x, images.y.astype(np.int32)))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.counter().map(lambda i: tf.stack([tf.cast(i, tf.int64), seed]))
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda xy, s: (augment(xy[0], s), xy[1]), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (normalize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
