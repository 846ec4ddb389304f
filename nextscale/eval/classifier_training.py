"""The recipe that trains the Fashion-MNIST classifier of `classifier.py` (minutes on two CPU cores).

SGD with Nesterov momentum, a linear warm-up then cosine decay of the learning rate, weight decay, label smoothing,
and augmentation by random crops after zero padding and horizontal flips. Training images come from `nextscale.data`
at `image_size` (default 32, the size nextscale models are trained at), so the classifier learns from the same resize
path that evaluation of 32-px samples takes. Augmentation is done here on whole uint8 batches (the data module's
per-sample path costs more Python time per epoch than the network on two cores), drawn from the run's generator.
Every random choice (initialisation, shuffling, augmentation) follows `seed`; bitwise repeatability also needs the
same hardware and software. Letters: B batch, S image side.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nextscale.data.fashion_mnist import FashionMNIST
from nextscale.data.seeding import derive_seed
from nextscale.eval.classifier import FashionClassifier, round_to_storage_precision
from nextscale.eval.config import ClassifierConfig, ClassifierTrainingConfig  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


def learning_rate(step: int, total_steps: int, config: ClassifierTrainingConfig) -> float:
    warmup_steps = max(1, round(config.warmup_fraction * total_steps))
    if step < warmup_steps:
        return config.peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return config.peak_lr * 0.5 * (1 + math.cos(math.pi * progress))


def augment(images_BSS: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random crops of the zero-padded uint8 images (shifts of up to `padding` px) and, if `hflip`, random horizontal
    flips. P = S + 2 * padding."""
    B, S, _ = images_BSS.shape
    if padding:
        padded_BPP = F.pad(images_BSS, (padding,) * 4)
        offsets_B2 = torch.randint(0, 2 * padding + 1, (B, 2), generator=generator)
        rows_BS = offsets_B2[:, :1] + torch.arange(S)
        columns_BS = offsets_B2[:, 1:] + torch.arange(S)
        images_BSS = padded_BPP[torch.arange(B)[:, None, None], rows_BS[:, :, None], columns_BS[:, None, :]]
    if hflip:
        flip_B = torch.rand(B, generator=generator) < 0.5
        images_BSS = torch.where(flip_B[:, None, None], images_BSS.flip(-1), images_BSS)
    return images_BSS


@torch.no_grad()
def classifier_accuracy(model: FashionClassifier, dataset, batch_size: int = 1000) -> float:
    """Top-1 accuracy (fraction) on every image of `dataset` (items (image_3HW in [-1, 1], label))."""
    was_training = model.training
    model.eval()
    correct = 0
    for begin in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))]
        images_B3HW = torch.stack([image for image, _ in items])
        labels_B = torch.tensor([label for _, label in items])
        correct += int((model(images_B3HW).argmax(1) == labels_B).sum())
    model.train(was_training)
    return correct / len(dataset)


def train_classifier(config: ClassifierTrainingConfig, progress: bool = True) -> tuple[FashionClassifier, dict]:
    """Train on the 60k training images; return the model (eval mode) and a record of the run: the recipe, the test
    accuracy on the 10k test images at `image_size` and at the native 28 px, and the training time."""
    train_set = FashionMNIST("train", config.image_size, config.root)
    images_NSS, labels_N = train_set.images_NSS, train_set.labels_N
    model = FashionClassifier(config.model)
    model.init_weights(torch.Generator().manual_seed(derive_seed(config.seed, 0)))
    model.to(memory_format=torch.channels_last).train()
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # biases and norm scales are not decayed
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.peak_lr,
        momentum=config.momentum,
        nesterov=True,
    )
    steps_per_epoch = len(train_set) // config.batch_size  # the last partial batch is dropped
    total_steps = steps_per_epoch * config.epochs
    shuffle = torch.Generator().manual_seed(derive_seed(config.seed, 1))
    augmentation = torch.Generator().manual_seed(derive_seed(config.seed, 2))
    started = time.perf_counter()
    bar = tqdm(total=total_steps, unit="step", desc="training classifier", disable=not progress, dynamic_ncols=True)
    step = 0
    with bar:
        for epoch in range(config.epochs):
            order = torch.randperm(len(train_set), generator=shuffle)
            for batch_index in range(steps_per_epoch):
                indices = order[batch_index * config.batch_size : (batch_index + 1) * config.batch_size]
                pixels_BSS = augment(images_NSS[indices], config.crop_padding, config.hflip, augmentation)
                images_B1SS = pixels_BSS[:, None].float() / 127.5 - 1
                labels_B = labels_N[indices]
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, total_steps, config)
                loss = F.cross_entropy(model(images_B1SS), labels_B, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                bar.update(1)
                if step % 50 == 0:
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
    train_seconds = time.perf_counter() - started
    round_to_storage_precision(model.eval())  # measure the accuracy of the weights as they are saved
    accuracy = classifier_accuracy(model, FashionMNIST("test", config.image_size, config.root))
    accuracy_28 = (
        accuracy if config.image_size == 28 else classifier_accuracy(model, FashionMNIST("test", 28, config.root))
    )
    logger.info("classifier test accuracy %.2f%% (%.0f s of training)", 100 * accuracy, train_seconds)
    record = {
        "recipe": asdict(config),
        "seed": config.seed,
        f"test_accuracy_{config.image_size}px": accuracy,
        "test_accuracy_28px": accuracy_28,
        "test_images": 10_000,
        "train_seconds": round(train_seconds, 1),
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return model.requires_grad_(False), record
