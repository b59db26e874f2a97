"""The tf.data input pipeline honours EXIF orientation, checked against Pillow's exif_transpose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

pytest.importorskip("tensorflow")

from workers.ml.data import read_orientation

QUADRANTS = ((220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 200))  # TL TR BL BR


def quadrant_picture(width: int, height: int) -> Image.Image:
    """Four flat colours, one per quadrant: every rotation and mirroring looks different."""
    pixels = np.empty((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    pixels[:h, :w], pixels[:h, w:], pixels[h:, :w], pixels[h:, w:] = QUADRANTS
    return Image.fromarray(pixels)


def save_jpeg(image: Image.Image, path: Path, orientation: int | None) -> Path:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, quality=95, subsampling=0, exif=exif)
    return path


def reference(path: Path, size: int) -> np.ndarray:
    """Pillow upright, then the pipeline's centre crop (same rounding) at the same size."""
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    width, height = upright.size
    side = min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    square = upright.crop((left, top, left + side, top + side))
    assert square.size == (size, size), "references are only built without resizing"
    return np.asarray(square, np.float32)


def pipeline(paths: list[Path], size: int, **kwargs: object) -> np.ndarray:
    from workers.ml.data import make_dataset

    ds = make_dataset(
        [str(p) for p in paths], [0] * len(paths), num_classes=2, image_size=size,
        batch_size=len(paths), training=False, **kwargs,
    )  # fmt: skip
    (x, y), *rest = list(ds)
    assert not rest and x.dtype.name == "float32" and y.dtype.name == "float32"
    return x.numpy()


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    diff = np.abs(got - want)
    # Both sides decode the same JPEG (TensorFlow's libjpeg vs Pillow's); only the quadrant
    # borders may differ by more than a few levels.
    assert diff.mean() < 2.0 and np.percentile(diff, 95) < 8, (what, diff.mean(), diff.max())


def test_every_orientation_matches_exif_transpose(tmp_path: Path) -> None:
    picture = quadrant_picture(32, 32)
    orientations = list(range(1, 9))
    paths = [save_jpeg(picture, tmp_path / f"o{n}.jpg", n) for n in orientations]
    assert [read_orientation(p) for p in paths] == orientations
    got = pipeline(paths, 32)
    references = [reference(p, 32) for p in paths]
    for n, image, want in zip(orientations, got, references, strict=True):
        assert_close(image, want, f"orientation {n}")
    # The eight references really differ, so matching each one means something.
    corners = {tuple(int(v) for v in r[4, 4]) + tuple(int(v) for v in r[4, 27]) for r in references}
    assert len(corners) == 8


def test_sideways_photo_is_rotated_then_centre_cropped(tmp_path: Path) -> None:
    # 48 wide x 32 tall; orientation 6 means "rotate 90° clockwise to view": upright it is 32
    # wide x 48 tall, and the centre 32 x 32 square drops 8 rows top and bottom, which held the
    # stored picture's left and right strips (red and blue).
    pixels = np.full((32, 48, 3), 128, np.uint8)
    pixels[:, :8] = (230, 20, 20)
    pixels[:, 40:] = (20, 20, 230)
    pixels[2:12, 10:20] = (20, 220, 20)  # green: top-left of the stored picture → top-right
    path = save_jpeg(Image.fromarray(pixels), tmp_path / "sideways.jpg", 6)
    (got,) = pipeline([path], 32)
    assert_close(got, reference(path, 32), "orientation 6, cropped")
    assert got[:, :, 0].max() < 160 and got[:, :, 2].max() < 160  # the strips were cropped away
    assert got[4, 24, 1] > 180 and got[4, 8, 1] < 160  # green near the top-right corner
    # Without the orientation the square would be the stored picture's centre, unrotated.
    (flat,) = pipeline([path], 32, orientations=[1])
    assert flat[4, 24, 1] < 160


def test_orientation_read_from_headers(tmp_path: Path) -> None:
    picture = quadrant_picture(16, 16)
    plain = save_jpeg(picture, tmp_path / "plain.jpg", None)
    picture.save(tmp_path / "plain.png")
    odd = save_jpeg(picture, tmp_path / "odd.jpg", 9)  # out of range: treated as upright
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    names = [plain, tmp_path / "plain.png", odd, broken, tmp_path / "missing.jpg"]
    assert [read_orientation(p) for p in names] == [1, 1, 1, 1, 1]
    got = pipeline([plain, odd], 16)
    assert_close(got[0], reference(plain, 16), "no tag")
    assert_close(got[1], np.asarray(picture, np.float32), "tag 9")


def test_unreadable_file_is_reported_by_decode(tmp_path: Path) -> None:
    import tensorflow as tf

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(tf.errors.InvalidArgumentError):
        pipeline([broken], 16)


def test_lengths_must_agree(tmp_path: Path) -> None:
    path = save_jpeg(quadrant_picture(16, 16), tmp_path / "a.jpg", 1)
    with pytest.raises(ValueError, match="differ in length"):
        pipeline([path], 16, orientations=[1, 6])


def test_file_cache_serves_the_same_batches(tmp_path: Path) -> None:
    from workers.ml.data import make_dataset

    paths = []
    for i in range(6):
        path = tmp_path / f"p{i}.jpg"
        Image.new("RGB", (40, 30), (40 * i, 20, 200 - 30 * i)).save(path)
        paths.append(str(path))
    prefix = tmp_path / "cache" / "train"
    prefix.parent.mkdir()
    ds = make_dataset(
        paths, [0, 1, 0, 1, 0, 1], num_classes=2, image_size=16, batch_size=3,
        training=False, cache=prefix,
    )  # fmt: skip
    first = [x.numpy() for x, _ in ds]
    assert list(prefix.parent.iterdir())  # tf.data wrote its cache files
    for path in paths:
        Path(path).unlink()  # a second pass must not need the photos any more
    second = [x.numpy() for x, _ in ds]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
