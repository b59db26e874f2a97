"""tf.data input for training: a dataset version's file list in, (pixels, one-hot label) out.

Per split: file paths, class indices and EXIF orientations (read once on the Python side when
the dataset is built, from each file's header only: `read_orientation`) → parallel read +
decode (`tf.io.decode_image`, three channels, first frame of an animation) → turned upright as
the EXIF Orientation tag says (1-8: rotations and mirrorings, the same as
`PIL.ImageOps.exif_transpose`, so a phone photo taken sideways trains upright) → centre-crop to
a square and resize to the image size (antialiased bilinear) → uint8 → cache in memory, or in
files for a dataset bigger than memory (decoding is paid once, the cache is 1/4 the size of
float pixels) → shuffle (training only,
seeded, a new order each epoch) → batch → float32 pixels and one-hot labels (one vectorised op
per batch) → prefetch. Everything after the orientation read runs in graph mode inside tf.data;
no Python per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIF_ORIENTATION = 0x0112


def read_orientation(path: str | Path) -> int:
    """The EXIF Orientation (1-8) of an image file, from its header only; 1 when it has none.

    The pixels are not decoded. A file Pillow cannot open gets 1 (decode reports it later). A
    PNG whose eXIf chunk comes after the image data is read as 1 (finding it would mean
    decoding the whole file); every other case agrees with `PIL.ImageOps.exif_transpose`.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            # The base-class method: PNG's own override decodes the image to look for a late
            # eXIf chunk; every other format's header is already parsed by open().
            value = Image.Image.getexif(image).get(EXIF_ORIENTATION, 1)
    except Exception:  # any reader error: not ours to report, decode will
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright(image: Any, orientation: Any) -> Any:
    """Apply an EXIF orientation (int32 scalar tensor, 1-8; anything else: as is) in graph mode.

    The transforms are those of `PIL.ImageOps.exif_transpose`: 2 mirror, 3 rotate 180, 4 flip,
    5 transpose, 6 rotate 90° clockwise, 7 transverse, 8 rotate 90° anticlockwise.
    """
    import tensorflow as tf

    def keep() -> Any:
        return image

    branches = [
        keep,  # 0: not a valid orientation
        keep,  # 1: upright already
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, k=2),
        lambda: tf.image.flip_up_down(image),
        lambda: tf.image.transpose(image),
        lambda: tf.image.rot90(image, k=3),
        lambda: tf.image.rot90(tf.image.transpose(image), k=2),
        lambda: tf.image.rot90(image, k=1),
    ]
    turned = tf.switch_case(tf.cast(orientation, tf.int32), branches, default=keep)
    turned.set_shape([None, None, 3])
    return turned


def decode_and_resize(path: Any, image_size: int, orientation: Any = 1) -> Any:
    """One image file → (image_size, image_size, 3) uint8: upright, centre-cropped, resized."""
    import tensorflow as tf

    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    image = upright(image, orientation)
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
    cache: bool | Path = True,
    orientations: Sequence[int] | None = None,
) -> Any:
    """A batched `tf.data.Dataset` of (float32 pixels in [0, 255], one-hot float32 labels).

    `cache`: True (memory), False, or a file prefix for tf.data's file cache (its folder must
    exist; the files are complete only after a full pass, and tf.data refuses a partial one).
    `orientations`: each file's EXIF orientation; None reads them with `read_orientation`.
    """
    import tensorflow as tf

    if orientations is None:
        orientations = [read_orientation(p) for p in paths]
    if not len(paths) == len(labels) == len(orientations):
        raise ValueError("paths, labels and orientations differ in length")
    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(
        (
            tf.constant(list(paths), tf.string),
            tf.constant(list(labels), tf.int32),
            tf.constant(list(orientations), tf.int32),
        )
    )
    ds = ds.map(
        lambda p, y, o: (decode_and_resize(p, image_size, o), y),
        num_parallel_calls=autotune,
        deterministic=True,
    )
    if isinstance(cache, Path):
        ds = ds.cache(str(cache))
    elif cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(max(len(paths), 1), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes, dtype=tf.float32)),
        num_parallel_calls=autotune,
    )
    return ds.prefetch(autotune)
