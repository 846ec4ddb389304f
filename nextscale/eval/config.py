"""The settings of the evaluation commands: `EvaluationConfig` (eval-samples), `SampleSetConfig` (sample-set),
`ClassifierConfig` and `ClassifierTrainingConfig` (train-classifier), and the names their options offer. Nothing here
imports torch, so that the command line builds its options from them before torch loads; the modules that use them
(evaluate_samples.py, sample_set.py, classifier.py, classifier_training.py) re-export them."""

from __future__ import annotations

from dataclasses import dataclass, field

from nextscale.errors import UsageError
from nextscale.sampling_settings import SAMPLING_PRESETS, SamplingSettings

FEATURE_NETWORKS = ("fmnist", "inception")
BUILTIN_REFERENCES = ("fashion-mnist:test", "fashion-mnist:train")
MAX_BATCH_SIZE = 10_000  # of a sample set: four digits of row in the file names


@dataclass(frozen=True)
class EvaluationConfig:
    samples: str  # folder of images, .npz, or fashion-mnist:train / :test (real images: the floor row)
    reconstruct_with: str | None = None  # model folder whose tokenizer round-trips the samples first (its floor)
    reference: str = "fashion-mnist:test"
    features: str = "fmnist"  # "fmnist" or "inception"
    inception_weights: str | None = None  # local InceptionV3 state dict (.pth); None: torch-fidelity downloads it
    classifier_weights: str | None = None  # None: the classifier shipped with nextscale
    data_root: str | None = None  # folder of the Fashion-MNIST IDX files; None: the data module's default
    cache_dir: str | None = None  # None: reference_cache.default_cache_dir()
    use_cache: bool = True
    batch_size: int = 100
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise UsageError(f"--batch-size must be positive, got {self.batch_size}")
        if self.features not in FEATURE_NETWORKS:
            raise UsageError(f"--features {self.features!r}: choose one of {', '.join(FEATURE_NETWORKS)}")
        if self.features != "inception" and self.inception_weights is not None:
            raise UsageError("--inception-weights needs --features inception")
        if self.features != "fmnist" and self.classifier_weights is not None:
            raise UsageError("--classifier-weights needs --features fmnist")


@dataclass(frozen=True)
class SampleSetConfig:
    out_dir: str
    per_class: int = 50  # images of each class (50 × 1000 classes = the official 50,000)
    classes: tuple[int, ...] | None = None  # None: every class of the model
    batch_size: int = 64  # part of the recipe: another batch size gives other images
    seed: int = 0  # base seed, ≥ 0
    settings: SamplingSettings = field(default_factory=lambda: SAMPLING_PRESETS["fid"])
    rejection: int = 1  # > 1: draw this many candidates per image, keep the one the classifier likes best ("-re")

    def __post_init__(self) -> None:
        if self.rejection < 1:
            raise UsageError(f"rejection (candidates per image) must be ≥ 1, got {self.rejection}")
        if self.per_class <= 0:
            raise UsageError(f"per_class must be positive, got {self.per_class}")
        if not 0 < self.batch_size <= MAX_BATCH_SIZE:
            raise UsageError(f"batch_size must be in [1, {MAX_BATCH_SIZE}], got {self.batch_size}")
        if self.seed < 0:
            raise UsageError(f"seed must be ≥ 0, got {self.seed}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))
            if not self.classes:
                raise UsageError("classes is empty")
            if len(set(self.classes)) != len(self.classes):
                raise UsageError("classes repeat; each class appears once (use per_class for more images)")


def parse_classes(spec: str) -> tuple[int, ...]:
    """'0-999' / '1,5,7' / '0-9,20' → class ids in the order given."""
    classes: list[int] = []
    try:
        for part in (p.strip() for p in spec.split(",")):
            first, _, last = part.partition("-")
            low, high = int(first), int(last) if last else int(first)
            if high < low:
                raise ValueError
            classes.extend(range(low, high + 1))
    except ValueError:
        raise UsageError(f"bad class list {spec!r}: use ids and ranges like 0-999 or 1,5,7 or 0-9,20") from None
    return tuple(classes)


@dataclass(frozen=True)
class ClassifierConfig:
    widths: tuple[int, int, int] = (16, 32, 64)  # channels of the 32², 16² and 8² stages
    feature_dim: int = 128  # F, the penultimate width (the "fmnist" feature vector)
    num_classes: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(width) for width in self.widths))
        if len(self.widths) != 3 or min(self.widths) <= 0:
            raise UsageError(f"widths must be three positive channel counts, got {self.widths}")
        if self.feature_dim <= 0 or self.num_classes < 2:
            raise UsageError(f"need feature_dim > 0 and num_classes ≥ 2, got {self.feature_dim}, {self.num_classes}")


@dataclass(frozen=True)
class ClassifierTrainingConfig:
    epochs: int = 14  # passes over the Fashion-MNIST training split
    batch_size: int = 128  # images per SGD step
    peak_lr: float = 0.05  # SGD learning rate after warm-up
    warmup_fraction: float = 0.03  # share of the steps spent warming the learning rate up from 0
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay
    label_smoothing: float = 0.05  # of the cross-entropy loss
    crop_padding: int = 2  # random crops after zero padding by this many pixels
    hflip: bool = True  # random horizontal flips
    image_size: int = 32  # side of the training images as `nextscale.data` loads them
    root: str | None = None  # folder of the Fashion-MNIST IDX files; None: the data module's default
    seed: int = 0  # seed of the initial weights and the data order
    model: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0:
            raise UsageError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        if not 0 <= self.warmup_fraction < 1:
            raise UsageError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.peak_lr <= 0:
            raise UsageError(f"peak_lr must be positive, got {self.peak_lr}")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.crop_padding < self.image_size // 2:
            raise UsageError(f"crop_padding must be in [0, {self.image_size // 2}), got {self.crop_padding}")
