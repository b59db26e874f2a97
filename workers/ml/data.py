"""tf.data input for training: a dataset version's file list in, (pixels, one-hot label) out.

Per split: file paths and class indices → parallel read + decode (`tf.io.decode_image`, three
channels, first frame of an animation) → centre-crop to a square and resize to the image size
(antialiased bilinear) → uint8 → cache in memory (decoding is paid once, the cache is 1/4 the
size of float pixels) → shuffle (training only, seeded, a new order each epoch) → float32 →
batch → prefetch. Everything runs in graph mode inside tf.data; no Python per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def decode_and_resize(path: Any, image_size: int) -> Any:
    """One image file → (image_size, image_size, 3) uint8, centre-cropped to the aspect first."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.minimum(height, width)
    top = (height - side) // 2
    left = (width - side) // 2
    square = tf.image.crop_to_bounding_box(image, top, left, side, side)
    resized = tf.image.resize(square, [image_size, image_size], antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def make_dataset(
    paths: Sequence[str],
    labels: Sequence[int],
    *,
    num_classes: int,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = 0,
    cache: bool = True,
) -> Any:
    """A batched `tf.data.Dataset` of (float32 pixels in [0, 255], one-hot float32 labels)."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(list(paths), tf.string), tf.constant(list(labels), tf.int32))
    )
    ds = ds.map(
        lambda p, y: (decode_and_resize(p, image_size), y),
        num_parallel_calls=autotune,
        deterministic=True,
    )
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes, dtype=tf.float32)),
        num_parallel_calls=autotune,
    )
    return ds.batch(batch_size).prefetch(autotune)
