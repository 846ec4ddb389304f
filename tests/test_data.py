"""Tests of nextscale.data: IDX parsing, the recipe transform, image folders, Fashion-MNIST, the procedural set and
the resumable distributed sampler."""

import gzip
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import idx_bytes, write_fashion_files
from PIL import Image
from torch.utils.data import DataLoader

from nextscale.data import (
    DATASETS,
    DEFAULT_FASHION_MNIST_ROOT,
    FASHION_MNIST_CLASSES,
    PROCEDURAL_CLASSES,
    DataConfig,
    FashionMNIST,
    IdxFormatError,
    ImageFolderDataset,
    ImageTransform,
    ProceduralShapes,
    ResumableDistributedSampler,
    SampleKey,
    build_dataset,
    parse_idx,
    read_idx,
    to_rgb,
)
from nextscale.data.transforms import resize_shorter_side

# ---------------------------------------------------------------------------------------------------------- helpers


def save_image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).convert(mode).save(path)


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


# Each class folder has its own colour, so a sample's label can be checked against its pixels.
CLASS_COLORS = {"zebra": (0, 0, 255), "apple": (255, 0, 0), "mango": (0, 255, 0)}


def make_class_folders(folder: Path, images_per_class: int = 2) -> None:
    for class_index, (name, color) in enumerate(CLASS_COLORS.items()):
        for i in range(images_per_class):
            size = (40 + 7 * i + class_index, 30 + 3 * i)  # different sizes and aspect ratios
            save_image(folder / name / f"img{i}.png", color, size)


# ------------------------------------------------------------------------------------------------------------- IDX


def test_idx_round_trip_on_written_files(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    floats = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    ints = np.array([-7, 0, 70000], dtype=np.int32)
    (tmp_path / "images.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "floats").write_bytes(idx_bytes(floats))
    (tmp_path / "ints").write_bytes(idx_bytes(ints))

    images_read = read_idx(tmp_path / "images.gz")
    assert images_read.dtype == torch.uint8 and images_read.shape == (5, 4, 3)
    assert np.array_equal(images_read.numpy(), images)
    assert np.array_equal(read_idx(tmp_path / "floats").numpy(), floats)  # big-endian floats decoded
    assert read_idx(tmp_path / "ints").tolist() == [-7, 0, 70000]  # big-endian multi-byte ints decoded


def test_idx_rejects_bad_files(tmp_path):
    good = idx_bytes(np.zeros((3, 2, 2), dtype=np.uint8))
    with pytest.raises(IdxFormatError, match="truncated"):
        parse_idx(good[:-1])
    with pytest.raises(IdxFormatError, match="trailing"):
        parse_idx(good + b"\0")
    with pytest.raises(IdxFormatError, match="not an IDX file"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(IdxFormatError, match="type code"):
        parse_idx(good[:2] + b"\x07" + good[3:])
    with pytest.raises(IdxFormatError, match="header"):
        parse_idx(good[:9])  # the header declares 3 dimensions but stops inside the second
    truncated_gzip = tmp_path / "cut.gz"
    truncated_gzip.write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(IdxFormatError, match=str(truncated_gzip)):
        read_idx(truncated_gzip)
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing.gz")


# --------------------------------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_written_idx_files(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    images[0] = 255  # a white image must map to exactly +1
    labels = np.array([0, 1, 2, 9, 4, 5], dtype=np.uint8)
    write_fashion_files(tmp_path, "t10k", images, labels)

    native = FashionMNIST("test", image_size=28, root=tmp_path)
    assert len(native) == 6 and native.classes == FASHION_MNIST_CLASSES and native.num_classes == 10
    image, label = native[3]
    assert image.shape == (3, 28, 28) and image.dtype == torch.float32 and label == 9
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])  # grayscale copied to 3 channels
    assert torch.allclose(image[0], torch.from_numpy(images[3]).float() / 127.5 - 1)
    assert torch.all(native[0][0] == 1.0)

    resized, _ = FashionMNIST("val", image_size=32, root=tmp_path)[3]  # "val" is the t10k split
    assert resized.shape == (3, 32, 32) and resized.min() >= -1 and resized.max() <= 1

    augmented = FashionMNIST("test", image_size=28, root=tmp_path, crop_padding=4, hflip=True, seed=3)
    assert torch.equal(augmented[SampleKey(2, 5)][0], augmented[SampleKey(2, 5)][0])
    assert any(not torch.equal(augmented[SampleKey(2, 0)][0], augmented[SampleKey(2, e)][0]) for e in range(1, 6))


def test_fashion_mnist_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        FashionMNIST("train", root=tmp_path / "nowhere")
    write_fashion_files(tmp_path, "train", np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8))
    with pytest.raises(IdxFormatError, match="3 images but .* 2 labels"):
        FashionMNIST("train", root=tmp_path)
    compressed = gzip.compress(idx_bytes(np.zeros((2, 28, 28), np.uint8)))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(compressed[:-20])  # a cut download
    with pytest.raises(IdxFormatError, match="train-images"):
        FashionMNIST("train", root=tmp_path)


@pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_ROOT.is_dir(),
    reason=f"{DEFAULT_FASHION_MNIST_ROOT} missing (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_files():
    train_images = read_idx(DEFAULT_FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(DEFAULT_FASHION_MNIST_ROOT / "train-labels-idx1-ubyte.gz")
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == torch.uint8
    assert train_labels.shape == (60000,)
    assert torch.bincount(train_labels.long()).tolist() == [6000] * 10  # balanced, labels in 0..9

    test_set = FashionMNIST("test", image_size=32)
    assert len(test_set) == 10000
    assert set(test_set.labels_N.tolist()) == set(range(10))
    image, label = test_set[0]
    assert image.shape == (3, 32, 32) and -1 <= image.min() < image.max() <= 1
    assert label == 9  # the first test image of Fashion-MNIST is an ankle boot


# ------------------------------------------------------------------------------------------------------- transform


def test_transform_shape_range_and_resize_rule():
    assert ImageTransform(256).resize_size == 288 and ImageTransform(512).resize_size == 576  # the recipe's sizes
    assert resize_shorter_side(Image.new("RGB", (400, 300)), 72).size == (96, 72)
    transform = ImageTransform(64)
    image = transform(noise_image(300, 200), index=0, epoch=0)
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert -1 <= image.min() < image.max() <= 1
    assert torch.all(transform(Image.new("RGB", (90, 70), (255, 255, 255)), 0, 0) == 1.0)
    assert torch.all(transform(Image.new("RGB", (70, 90), (0, 0, 0)), 0, 0) == -1.0)


def test_transform_randomness_is_deterministic_per_seed_epoch_index():
    image = noise_image(120, 100)
    transform = ImageTransform(32, seed=7)
    reference = transform(image, index=5, epoch=2)
    torch.manual_seed(123)  # the global RNG must not matter
    assert torch.equal(transform(image, index=5, epoch=2), reference)
    assert torch.equal(ImageTransform(32, seed=7)(image, 5, 2), reference)  # a fresh object (another worker)
    assert any(not torch.equal(transform(image, 5, epoch), reference) for epoch in range(3, 8))
    assert any(not torch.equal(transform(image, index, 2), reference) for index in range(6, 11))
    assert not torch.equal(ImageTransform(32, seed=8)(image, 5, 2), reference)
    evaluation = ImageTransform(32, train=False)
    assert torch.equal(evaluation(image, 0, 0), evaluation(image, 9, 9))  # centre crop ignores the key


def test_transform_hflip_only_mirrors_the_same_crop():
    image = noise_image(80, 60)
    plain, flipping = ImageTransform(32, hflip=False), ImageTransform(32, hflip=True)
    flipped = []
    for index in range(20):
        unflipped_view, view = plain(image, index, 0), flipping(image, index, 0)
        assert torch.equal(view, unflipped_view) or torch.equal(view, unflipped_view.flip(-1))
        flipped.append(not torch.equal(view, unflipped_view))
    assert 0 < sum(flipped) < 20


def test_any_image_mode_becomes_rgb():
    gray = Image.new("L", (10, 10), 100)
    assert to_rgb(gray).mode == "RGB" and to_rgb(gray).getpixel((0, 0)) == (100, 100, 100)
    tensor = ImageTransform(8, train=False)(gray, 0, 0)
    assert tensor.shape == (3, 8, 8) and torch.equal(tensor[0], tensor[2])
    transparent = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)  # composited on white, not black
    palette = Image.new("RGB", (10, 10), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert to_rgb(palette).getpixel((0, 0)) == (10, 200, 30)
    palette.info["transparency"] = 0  # palette entry 0 (every pixel here) is transparent
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)
    sixteen_bit = Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16))
    assert to_rgb(sixteen_bit).getpixel((0, 0)) == (255, 255, 255)  # scaled, not clipped from 65535
    assert to_rgb(Image.new("CMYK", (4, 4))).mode == "RGB"


# --------------------------------------------------------------------------------------------------- image folders


def test_folder_class_ids_follow_sorted_names_and_pixels(tmp_path):
    make_class_folders(tmp_path / "train")
    (tmp_path / "train" / "apple" / "notes.txt").write_text("not an image")
    dataset = ImageFolderDataset(tmp_path, "train", image_size=16)
    assert dataset.classes == ["apple", "mango", "zebra"] and dataset.num_classes == 3
    assert len(dataset) == 6
    for index in range(len(dataset)):
        image, label = dataset[index]
        assert image.shape == (3, 16, 16)
        expected_color = torch.tensor(CLASS_COLORS[dataset.classes[label]]) / 127.5 - 1
        assert torch.allclose(image.mean((1, 2)), expected_color, atol=1e-5)


def test_folder_layouts_and_splits(tmp_path):
    make_class_folders(tmp_path / "flat")
    flat = ImageFolderDataset(tmp_path / "flat", "train", image_size=16)  # no split folder: classes directly
    assert flat.classes == ["apple", "mango", "zebra"]
    make_class_folders(tmp_path / "split" / "train")
    with pytest.raises(FileNotFoundError, match="no 'val' folder"):
        ImageFolderDataset(tmp_path / "split", "val", image_size=16)
    make_class_folders(tmp_path / "split" / "val", images_per_class=1)
    val = ImageFolderDataset(tmp_path / "split", "val", image_size=16)
    assert len(val) == 3 and not val.transform.train


def test_folder_skips_and_counts_unreadable_images(tmp_path, caplog):
    make_class_folders(tmp_path)
    broken_path = tmp_path / "apple" / "img0_broken.jpg"  # sorts between img0.png and img1.png
    encoded = io.BytesIO()
    noise_image(64, 64).save(encoded, format="JPEG")
    broken_path.write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])  # truncated JPEG
    (tmp_path / "mango" / "garbage.png").write_bytes(b"this is not a png")
    dataset = ImageFolderDataset(tmp_path, image_size=16)
    paths = [Path(path).name for path, _ in dataset.samples]
    broken_index = paths.index("img0_broken.jpg")
    assert paths[broken_index + 1] == "img1.png"

    with caplog.at_level(logging.WARNING, logger="nextscale.data.folder"):
        replacement = dataset[SampleKey(broken_index, 3)]
        again = dataset[SampleKey(broken_index, 3)]
    next_sample = dataset[SampleKey(broken_index + 1, 3)]
    assert torch.equal(replacement[0], next_sample[0]) and replacement[1] == next_sample[1]
    assert torch.equal(again[0], replacement[0])
    assert dataset.skipped_files == 1
    assert sum(str(broken_path) in record.getMessage() for record in caplog.records) == 1  # warned once

    for index in range(len(dataset)):
        dataset[index]
    assert dataset.skipped_files == 2


def test_folder_input_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ImageFolderDataset(missing)
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "dogs").mkdir()
    with pytest.raises(ValueError, match=f"no images .* {tmp_path / 'empty'}"):
        ImageFolderDataset(tmp_path / "empty")
    save_image(tmp_path / "loose" / "a.png", (1, 2, 3))
    with pytest.raises(ValueError, match="one subfolder per class"):
        ImageFolderDataset(tmp_path / "loose")


def test_folder_single_class_needs_override(tmp_path):
    save_image(tmp_path / "only" / "a.png", (1, 2, 3))
    save_image(tmp_path / "only" / "b.jpg", (1, 2, 3))
    with pytest.raises(ValueError, match="at least two classes"):
        ImageFolderDataset(tmp_path, image_size=8)
    dataset = ImageFolderDataset(tmp_path, image_size=8, allow_single_class=True)
    assert dataset.classes == ["only"] and len(dataset) == 2


def test_folder_int_keys_use_set_epoch(tmp_path):
    make_class_folders(tmp_path)
    dataset = ImageFolderDataset(tmp_path, image_size=16)
    dataset.set_epoch(4)
    assert torch.equal(dataset[1][0], dataset[SampleKey(1, 4)][0])
    assert torch.equal(dataset[-1][0], dataset[SampleKey(len(dataset) - 1, 4)][0])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


# ------------------------------------------------------------------------------------------------------ procedural


def test_procedural_is_deterministic_and_balanced():
    first, second = ProceduralShapes(20, 16, seed=3), ProceduralShapes(20, 16, seed=3)
    for index in (0, 7, 19):
        assert torch.equal(first[index][0], second[index][0])
    assert not torch.equal(first[0][0], ProceduralShapes(20, 16, seed=4)[0][0])
    assert [first[i][1] for i in range(20)] == list(range(10)) * 2
    image, _ = first[5]
    assert image.shape == (3, 16, 16) and -1 <= image.min() < image.max() <= 1
    assert ProceduralShapes(10, 8, num_classes=4).classes == PROCEDURAL_CLASSES[:4]


def test_procedural_classes_are_distinguishable():
    """Held-out samples are classified by the nearest class centroid of a position-invariant feature (the Fourier
    magnitude of the normalised grayscale image); chance level is 10%."""

    def features(dataset):
        images_N3HW = torch.stack([dataset[i][0] for i in range(len(dataset))])
        gray_NHW = images_N3HW.mean(1)
        gray_NHW = gray_NHW - gray_NHW.mean((1, 2), keepdim=True)
        gray_NHW = gray_NHW / gray_NHW.flatten(1).norm(dim=1)[:, None, None]
        labels_N = torch.tensor([dataset[i][1] for i in range(len(dataset))])
        return torch.fft.fft2(gray_NHW).abs().flatten(1), labels_N

    train_features, train_labels = features(ProceduralShapes(300, 32, seed=0))
    test_features, test_labels = features(ProceduralShapes(200, 32, seed=1))
    centroids = torch.stack([train_features[train_labels == c].mean(0) for c in range(10)])
    predictions = torch.cdist(test_features, centroids).argmin(1)
    assert (predictions == test_labels).float().mean() > 0.85


# --------------------------------------------------------------------------------------------------------- sampler


def take(sampler, count):
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_sampler_ranks_share_one_permutation_and_cover_each_index_once():
    world_size, batch_size, dataset_size = 4, 3, 24
    samplers = [
        ResumableDistributedSampler(dataset_size, batch_size, world_size=world_size, rank=r, seed=5, yield_epoch=False)
        for r in range(world_size)
    ]
    assert samplers[0].batches_per_epoch == 2
    batches_by_rank = [take(sampler, 3 * 2) for sampler in samplers]  # three epochs
    for epoch in range(3):
        # global batch b is the concatenation of every rank's b-th local batch: what one process would draw
        global_batches = [sum((batches[2 * epoch + b] for batches in batches_by_rank), []) for b in range(2)]
        everything = sum(global_batches, [])
        assert sorted(everything) == list(range(dataset_size))  # each index exactly once per epoch
        assert everything == samplers[1].epoch_order(epoch).tolist()  # slices of one shared order
    assert samplers[0].epoch_order(0).tolist() != samplers[0].epoch_order(1).tolist()
    assert samplers[0].epoch == 3 and samplers[0].batches_done == 0


def test_sampler_pads_with_the_head_of_the_permutation():
    sampler = ResumableDistributedSampler(10, 4, world_size=2, seed=1)
    order = sampler.epoch_order(0).tolist()
    assert len(order) == 16 and order[10:] == order[:6] and sorted(order[:10]) == list(range(10))
    tiny = ResumableDistributedSampler(3, 4, world_size=2, seed=1)  # dataset smaller than one global batch
    assert len(tiny.epoch_order(0)) == 8 and set(tiny.epoch_order(0).tolist()) == {0, 1, 2}
    in_order = ResumableDistributedSampler(5, 2, shuffle=False, yield_epoch=False)
    assert take(in_order, 3) == [[0, 1], [2, 3], [4, 0]]


@pytest.mark.parametrize("stop_after", [0, 2, 3, 7])
def test_sampler_resume_continues_with_exactly_the_remaining_batches(stop_after):
    def make(rank):
        return ResumableDistributedSampler(22, 2, world_size=3, rank=rank, seed=11)  # 4 batches per epoch, padded

    for rank in range(3):
        uninterrupted = take(make(rank), 12)
        interrupted = make(rank)
        before = take(interrupted, stop_after)
        state = json.loads(json.dumps(interrupted.state_dict()))  # survives saving as JSON
        assert state == interrupted.state_after(stop_after)
        resumed = make(rank)
        resumed.load_state_dict(state)
        assert before + take(resumed, 12 - stop_after) == uninterrupted
    assert uninterrupted[4][0].epoch == 1  # keys carry the epoch of their batch


def test_sampler_refuses_inconsistent_resume():
    sampler = ResumableDistributedSampler(20, 2, world_size=2, seed=1)
    take(sampler, 3)
    with pytest.raises(ValueError, match="seed"):
        ResumableDistributedSampler(20, 2, world_size=2, seed=2).load_state_dict(sampler.state_dict())
    with pytest.raises(ValueError, match="mid-epoch"):
        ResumableDistributedSampler(20, 2, world_size=4, seed=1).load_state_dict(sampler.state_dict())
    at_epoch_start = ResumableDistributedSampler(20, 2, world_size=4, seed=1)
    at_epoch_start.load_state_dict(sampler.state_after(5))  # 5 batches = exactly one epoch at world size 2
    assert (at_epoch_start.epoch, at_epoch_start.batches_done) == (1, 0)


def test_dataloader_workers_see_the_epoch_through_the_keys(tmp_path):
    for index in range(9):
        (tmp_path / f"class{index % 2}").mkdir(exist_ok=True)
        noise_image(30 + index, 24, seed=index).save(tmp_path / f"class{index % 2}" / f"{index}.png")
    dataset = ImageFolderDataset(tmp_path, image_size=16, hflip=True)  # worker copies keep dataset.epoch == 0
    keys_by_batch = take(ResumableDistributedSampler(len(dataset), 3, seed=0), 6)  # two epochs of 3 batches
    loader = DataLoader(dataset, batch_sampler=ResumableDistributedSampler(len(dataset), 3, seed=0), num_workers=2)
    iterator = iter(loader)
    epoch_mattered = False
    for keys in keys_by_batch:
        images, labels = next(iterator)
        assert torch.equal(images, torch.stack([dataset[key][0] for key in keys]))
        assert labels.tolist() == [dataset[key][1] for key in keys]
        epoch_mattered |= not torch.equal(images, torch.stack([dataset[key.index][0] for key in keys]))
    assert keys_by_batch[-1][0].epoch == 1 and epoch_mattered


# ----------------------------------------------------------------------------------------------------------- build


def test_build_dataset_by_name_and_path(tmp_path):
    assert "procedural" in DATASETS and "fashion-mnist" in DATASETS
    train = build_dataset("procedural", "train", 16, num_samples=12, num_classes=3)
    val = build_dataset("procedural", "val", 16, num_samples=12, num_classes=3)
    assert len(train) == 12 and train.num_classes == 3 and train.classes == PROCEDURAL_CLASSES[:3]
    assert not torch.equal(train[0][0], val[0][0])  # the validation images are other images

    make_class_folders(tmp_path / "images" / "train")
    folder = build_dataset(str(tmp_path / "images"), "train", 16, hflip=True)
    assert isinstance(folder, ImageFolderDataset) and folder.classes == ["apple", "mango", "zebra"]
    assert folder.transform.hflip and folder.transform.train

    write_fashion_files(tmp_path / "fmnist", "train", np.zeros((2, 28, 28), np.uint8), np.array([3, 4], np.uint8))
    fashion = DataConfig(name="fashion-mnist", image_size=32, root=str(tmp_path / "fmnist")).build("train")
    image, label = fashion[1]
    assert image.shape == (3, 32, 32) and label == 4

    with pytest.raises(ValueError, match="unknown dataset 'imagenette'"):
        build_dataset("imagenette", "train", 16)
