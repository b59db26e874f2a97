"""`keras.applications` backbones and the classifier built on them (TensorFlow imported lazily).

Every model Sporeprint builds takes float32 RGB pixels in [0, 255] at `image_size` x
`image_size`, so that exports and the evaluation code never need to know a backbone's own
preprocessing: backbones that have `include_preprocessing` (MobileNetV3, ConvNeXt,
EfficientNetV2) get it switched on, the others (ResNet50V2, Xception: inputs in [-1, 1]) get a
`Rescaling` layer in front.

The classifier: input → augmentation layers (active only in training) → preprocessing →
backbone → global-average pooling → dropout → Dense softmax, the last in float32 so that mixed
precision never produces float16 probabilities. A pretrained backbone is called with
`training=False`, so its BatchNormalization layers stay in inference mode when it is unfrozen
for fine-tuning (the moving statistics from ImageNet are not destroyed by small batches); a
backbone trained from scratch (`weights=None`) has no statistics worth keeping and trains
its BatchNormalization normally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.services.training import BACKBONES, TrainingError, weights_file

BACKBONE_LAYER = "backbone"
SCRATCH_BN_MOMENTUM = 0.5


def _constructor(name: str) -> tuple[Any, dict[str, Any], float | None]:
    """(keras.applications constructor, extra kwargs, rescale factor or None)."""
    import keras

    apps = keras.applications
    table: dict[str, tuple[Any, dict[str, Any], float | None]] = {
        "MobileNetV3Small": (apps.MobileNetV3Small, {"include_preprocessing": True}, None),
        "MobileNetV3Large": (apps.MobileNetV3Large, {"include_preprocessing": True}, None),
        "ResNet50V2": (apps.ResNet50V2, {}, 1 / 127.5),
        "Xception": (apps.Xception, {}, 1 / 127.5),
        "ConvNeXtTiny": (apps.ConvNeXtTiny, {"include_preprocessing": True}, None),
        "EfficientNetV2B0": (apps.EfficientNetV2B0, {"include_preprocessing": True}, None),
    }
    assert set(table) == set(BACKBONES), "backbone tables disagree"
    return table[name]


def preprocessing_config(backbone: str, image_size: int) -> dict[str, Any]:
    """What a consumer of the saved model must feed it (stored on the TrainedModel row)."""
    _, _, rescale = _constructor(backbone)
    return {
        "input_size": [image_size, image_size, 3],
        "color": "rgb",
        "dtype": "float32",
        "range": [0, 255],
        "resize": "centre-crop to square, then bilinear resize (antialiased)",
        "inside_model": "rescale to [-1, 1]" if rescale else f"{backbone}'s own preprocessing",
    }


def build_backbone(name: str, image_size: int, weights: str | None, weights_dir: Path) -> Any:
    """The backbone without its top; ImageNet weights come from a local file or TrainingError."""
    if name not in BACKBONES:
        raise TrainingError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
    import keras

    constructor, extra, _ = _constructor(name)
    path: Path | None = None
    if weights == "imagenet":
        path = weights_file(name, weights_dir)
        if path is None:
            raise TrainingError(
                f"no ImageNet weights for {name}: put {BACKBONES[name]} in {weights_dir} (or "
                "the Keras cache, ~/.keras/models), or train from scratch with weights: null"
            )
    model = constructor(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3), **extra
    )
    if path is not None:
        try:
            model.load_weights(str(path))
        except Exception as exc:
            raise TrainingError(f"could not load {path.name} into {name}: {exc}") from None
    if weights is None:
        # From scratch the moving statistics start at (0, 1); keras.applications' momentum
        # (0.99-0.999) needs thousands of steps to forget that, and until then inference mode
        # (validation, test, export) sees a different network from the one being trained.
        # 0.5 was needed for a small demo run to evaluate sensibly (0.9 was not enough after
        # ~40 steps); a long from-scratch run would do well with a higher value (a later knob).
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
    model.name = BACKBONE_LAYER
    return model


def augmentation_layers(aug: dict[str, Any], seed: int) -> list[Any]:
    """Keras preprocessing layers for the given magnitudes; each is a no-op at inference."""
    import keras

    layers: list[Any] = []
    if aug.get("flip"):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if aug.get("rotation"):
        layers.append(keras.layers.RandomRotation(aug["rotation"], seed=seed + 1))
    if aug.get("translation"):
        t = aug["translation"]
        layers.append(keras.layers.RandomTranslation(t, t, seed=seed + 2))
    if aug.get("zoom"):
        layers.append(keras.layers.RandomZoom(aug["zoom"], seed=seed + 3))
    if aug.get("contrast"):
        layers.append(keras.layers.RandomContrast(aug["contrast"], seed=seed + 4))
    if aug.get("brightness"):
        layers.append(
            keras.layers.RandomBrightness(aug["brightness"], value_range=(0, 255), seed=seed + 5)
        )
    return layers


def build_model(
    backbone: str,
    num_classes: int,
    image_size: int,
    weights: str | None,
    dropout: float,
    augmentation: dict[str, Any],
    *,
    weights_dir: Path,
    seed: int = 0,
) -> Any:
    """The classifier described in the module docstring (uncompiled)."""
    import keras

    base = build_backbone(backbone, image_size, weights, weights_dir)
    _, _, rescale = _constructor(backbone)
    inputs = keras.Input((image_size, image_size, 3), name="pixels")
    x = inputs
    for layer in augmentation_layers(augmentation, seed):
        x = layer(x)
    if rescale:
        x = keras.layers.Rescaling(rescale, offset=-1.0, name="rescale")(x)
    x = base(x, training=False) if weights is not None else base(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="probs")(
        x
    )
    return keras.Model(inputs, outputs, name=f"sporeprint_{backbone.lower()}")


def get_backbone(model: Any) -> Any:
    return model.get_layer(BACKBONE_LAYER)


def set_trainable(model: Any, unfreeze: Any, *, pretrained: bool) -> int:
    """Freeze the backbone for a phase: "head", "all" or {"last": N}; returns trainable layers.

    With a pretrained backbone, BatchNormalization layers always stay frozen.
    """
    import keras

    base = get_backbone(model)
    layers = base.layers
    if unfreeze == "head":
        base.trainable = False
        return 0
    base.trainable = True
    count = len(layers) if unfreeze == "all" else int(unfreeze["last"])
    cut = max(len(layers) - count, 0)
    trainable = 0
    for i, layer in enumerate(layers):
        on = i >= cut and not (pretrained and isinstance(layer, keras.layers.BatchNormalization))
        layer.trainable = on
        trainable += int(on and bool(layer.weights))
    return trainable
