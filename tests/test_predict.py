"""Preparing a photo for a TFLite model, and refusing what is not a usable photo or model.

Everything here runs without TensorFlow except the comparison with the training pipeline's
decoder, which is skipped where TensorFlow is missing.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.services.photos import MAX_PIXELS
from app.services.predict import (
    PredictError,
    TfliteClassifier,
    load_bundle,
    open_export,
    preprocess,
)


def photo_bytes(image: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def banded(width: int, height: int) -> Image.Image:
    """Red left/top margin, green centre square, blue right/bottom margin."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, :] = (0, 200, 0)
    if width > height:
        margin = (width - height) // 2
        pixels[:, :margin] = (200, 0, 0)
        pixels[:, width - margin :] = (0, 0, 200)
    else:
        margin = (height - width) // 2
        pixels[:margin] = (200, 0, 0)
        pixels[height - margin :] = (0, 0, 200)
    return Image.fromarray(pixels)


def test_preprocess_centre_crops_resizes_and_keeps_0_255_floats(tmp_path: Path) -> None:
    for width, height in ((120, 80), (80, 120)):
        data = photo_bytes(banded(width, height))
        pixels = preprocess(data, 32)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.float32
        # Only the centre square is left: pure green, no red or blue margin.
        assert np.all(pixels[..., 1] == 200) and pixels[..., [0, 2]].max() == 0
        path = tmp_path / f"{width}x{height}.png"
        path.write_bytes(data)
        assert np.array_equal(preprocess(path, 32), pixels)
        assert np.array_equal(preprocess(str(path), 32), pixels)


def test_preprocess_turns_photos_upright_and_makes_rgb() -> None:
    # A portrait photo stored sideways: landscape pixels with EXIF orientation 6 (90° cw).
    stored = banded(120, 80)
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = preprocess(photo_bytes(stored, "JPEG", exif=exif, quality=95), 24)
    plain = preprocess(photo_bytes(stored, "JPEG", quality=95), 24)
    assert np.abs(turned - np.rot90(plain, k=-1)).mean() < 2
    # Greyscale, palette and RGBA photos come out as three channels.
    for mode in ("L", "P", "RGBA", "CMYK"):
        image = banded(40, 40).convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
        assert preprocess(photo_bytes(image, fmt), 16).shape == (16, 16, 3)


def test_preprocess_matches_the_training_pipeline(tmp_path: Path) -> None:
    """Pillow's resize = tf.image.resize(antialias=True) to rounding; JPEG decoders differ ~1."""
    tf = pytest.importorskip("tensorflow")
    from workers.ml.data import decode_and_resize

    rng = np.random.default_rng(0)
    for (width, height), size in (((640, 480), 64), ((300, 500), 224), ((50, 40), 64)):
        coarse = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        for fmt, mean_limit, max_limit in (("PNG", 0.3, 1), ("JPEG", 2.0, 8)):
            path = tmp_path / f"p{width}.{fmt.lower()}"
            image.save(path, fmt, quality=90)
            ours = preprocess(path, size)
            theirs = decode_and_resize(tf.constant(str(path)), size).numpy().astype(np.float32)
            diff = np.abs(ours - theirs)
            print(f"{width}x{height}->{size} {fmt}: mean {diff.mean():.3f}, max {diff.max():.0f}")
            assert diff.mean() <= mean_limit and diff.max() <= max_limit


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"empty \(0 bytes\)"),
        (b"these are my notes, not a photo\n" * 20, "not an image Sporeprint can read"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "not an image"),
    ],
)
def test_bad_photos_are_refused_with_a_reason(tmp_path: Path, content: bytes, message: str) -> None:
    with pytest.raises(PredictError, match=message) as refused:
        preprocess(content, 32)
    assert refused.value.status_code == (400 if not content else 415)
    path = tmp_path / "upload.jpg"
    path.write_bytes(content)
    with pytest.raises(PredictError, match=message):
        preprocess(path, 32)


def test_a_damaged_photo_is_refused() -> None:
    whole = photo_bytes(banded(200, 200), "JPEG")
    with pytest.raises(PredictError, match="damaged"):
        preprocess(whole[: len(whole) // 2], 32)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="no such file"):
        preprocess(tmp_path / "nothing.jpg", 32)
    with pytest.raises(PredictError, match="not a file"):
        preprocess(tmp_path, 32)


def test_too_many_pixels_are_refused_before_decoding() -> None:
    # 8100 x 8000 = 64.8 megapixels, above the app's bound, yet a tiny PNG of one colour.
    side = (8100, 8000)
    assert side[0] * side[1] > MAX_PIXELS
    huge = photo_bytes(Image.new("1", side), "PNG", optimize=True)
    assert len(huge) < 200_000
    with pytest.raises(
        PredictError, match=r"too large \(8100 x 8000 pixels; at most 64 mega"
    ) as big:
        preprocess(huge, 32)
    assert big.value.status_code == 413
    with pytest.raises(PredictError, match=r"at most 0\.01 megapixels"):
        preprocess(photo_bytes(banded(200, 200)), 32, max_pixels=10_000)


def test_things_that_are_not_models_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PredictError, match="not a usable TFLite model"):
        TfliteClassifier(b"definitely not a flatbuffer" * 10, ["a", "b"])
    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"\x00" * 100)
    with pytest.raises(PredictError, match="not a usable TFLite model"):
        open_export(fake)
    with pytest.raises(PredictError, match="no such model file"):
        open_export(tmp_path / "gone.tflite")
    not_zip = tmp_path / "bundle.zip"
    not_zip.write_text("hello")
    with pytest.raises(PredictError, match="cannot read the bundle"):
        load_bundle(not_zip)
    half = tmp_path / "half.zip"
    with zipfile.ZipFile(half, "w") as bundle:
        bundle.writestr("labels.txt", "a\nb\n")
    with pytest.raises(PredictError, match=r"no model\.tflite"):
        load_bundle(half)
