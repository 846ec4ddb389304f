"""The Fashion-MNIST model inside the package (`nextscale sample --model fmnist`, the demo's default): it loads by
name without any download, is stored small, and draws the classes it is asked for."""

from __future__ import annotations

import torch

from nextscale.eval.classifier import load_classifier
from nextscale.pipeline import Pipeline
from nextscale.pretrained import read_metadata, resolve_model
from nextscale.weights import read_safetensors


def test_shipped_model_is_stored_in_fp16_and_small():
    directory = resolve_model("fmnist")
    files = [f for f in directory.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 8_000_000
    for part in ("tokenizer", "transformer"):
        state = read_safetensors(directory / part / "model.safetensors")
        assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.float16}, part
    shipped = read_metadata("fmnist")["shipped"]
    assert shipped["evaluation"]["fid"] > 0 and shipped["trained_with"].startswith("nextscale")


def test_shipped_model_draws_the_requested_classes():
    """Three samples of every class with the ablation's FID setting (cfg 1.5, top-k 112 of 512): the evaluation
    classifier recognises most as the class asked for (the recorded accuracy over 2,000 samples is the reference;
    30 samples vary around it)."""
    pipe = Pipeline.from_pretrained("fmnist")
    assert pipe.class_names[0] == "T-shirt/top" and pipe.image_size == 32
    labels = [c for c in range(10) for _ in range(3)]
    images_B3HW = pipe.generate(labels, seed=0, settings="fid", top_k=112)  # as the ablation evaluated it
    assert images_B3HW.shape == (30, 3, 32, 32) and images_B3HW.min() >= 0 and images_B3HW.max() <= 1
    with torch.no_grad():
        predicted_B = load_classifier()(images_B3HW * 2 - 1).argmax(1)
    accuracy = (predicted_B == torch.tensor(labels)).float().mean().item()
    recorded = read_metadata("fmnist")["shipped"]["evaluation"]["class_accuracy"]
    assert accuracy >= min(0.6, recorded - 0.2), (accuracy, recorded)
