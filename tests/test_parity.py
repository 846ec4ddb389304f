"""Parity with the official VAR code (FoundationVision/VAR @ 78b9539) on seeded tiny models.

Every number here was computed by the official implementation from the same checkpoint files (CPU, fp32); see
../shared/parity/README.md for the fields. Indices must be identical, floats within 1e-4 absolute (the official code
itself moves by up to 2e-5 between one and two CPU threads). The fixtures cover the default paths (tiny_a: L2-norm
attention, per-block AdaLN, 4 partially shared φ), the alternatives (tiny_b: plain attention, shared AdaLN,
one φ per scale) and the 10-scale 256-px schedule with its φ mapping [0,0,1,1,1,2,2,3,3,3] (tiny_e).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from unittest import mock

import pytest
import torch

from nextscale.convert import VAR_NAMES, rename
from nextscale.editing import edit
from nextscale.sampling import generate
from nextscale.train.var_task import teacher_forced_loss

ATOL = 1e-4
SAMPLE_RUNS = (
    "greedy_cfg0",
    "greedy_cfg1.5",
    "fid_default",
    "demo_smooth",
    "plain_multinomial",
    "topk8_topp0.8",
    "label_none_seed7",
    "label_int_neg1_seed8",
)
EDIT_RUNS = ("inpaint_uncond", "outpaint_cond", "classedit_sharp")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(
        actual.detach().float(), expected.float(), atol=ATOL, rtol=0, msg=lambda m: f"{what}: {m}"
    )


def assert_all_close(actual: list, expected: list, what: str) -> None:
    assert len(actual) == len(expected), f"{what}: {len(actual)} scales, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert_close(a, e, f"{what}, scale {k}")


def assert_image(out, spec: dict, tokenizer, what: str) -> None:
    """The sampler's image is exactly the decode of its final f̂ (which the caller compared with the official f̂),
    and the decoder maps the official final f̂ to the official image. Comparing the two images directly would add
    the decoder's amplification of the f̂ differences of Gumbel-smoothed runs (≤ 1e-4 in f̂ become up to 1.5e-4 in
    the tiny_e image with torch 2.14's CPU kernels)."""
    with torch.no_grad():
        mine = tokenizer.decode_fhat(out.trace["fhat"][-1]).add(1).mul(0.5)
        official = tokenizer.decode_fhat(spec["fhat_per_scale"][-1]).add(1).mul(0.5)
    assert torch.equal(out.images, mine), f"{what}: the image is not the decode of the sampled f̂"
    assert_close(official, spec["img01"], what)


def assert_tokens_equal(actual: list, expected: list, what: str) -> None:
    """Our (B, h, w) maps or (B, l) rows against the official (B, pn²) row-major flattening."""
    assert len(actual) == len(expected), f"{what}: {len(actual)} scales, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        a = a.reshape(a.shape[0], -1)
        assert a.shape == e.shape, f"{what}, scale {k}: shape {tuple(a.shape)} vs {tuple(e.shape)}"
        mismatches = (a != e).sum().item()
        assert mismatches == 0, f"{what}, scale {k}: {mismatches} of {e.numel()} tokens differ"


def token_maps(io: dict) -> list[torch.Tensor]:
    """The fixture's (B, pn²) rows as (B, pn, pn) maps."""
    return [idx.view(idx.shape[0], round(idx.shape[1] ** 0.5), -1) for idx in io["vae_idxBl"]]


@contextmanager
def decoder_skipped(tokenizer):
    """For sampling runs whose fixture stores no image, only tokens, logits and f̂ are compared; the final decode of
    f̂ is stubbed out so that tiny_e's 256-px decoder does not run six times for nothing."""
    with mock.patch.object(tokenizer, "decode_fhat", lambda f_hat: f_hat.new_zeros(f_hat.shape[0], 3, 1, 1)):
        yield


# ---- tokenizer --------------------------------------------------------------------------------------------------


def test_tokenizer_latent_tokens_and_fhat(parity):
    io, tokenizer = parity.io, parity.tokenizer
    with torch.no_grad():
        assert_close(tokenizer.latent(io["inp_img"]), io["vae_f_BChw"], "f = quant_conv(encoder(x))")
    maps, fhat_list = tokenizer.encode_with_fhat(io["inp_img"])
    assert_tokens_equal(maps, io["vae_idxBl"], "token maps")
    assert_all_close(fhat_list, io["vae_fhat_list"], "cumulative f̂")
    assert list(tokenizer.quantizer.phi_of_scale) == list(io["phi_choice"])


def test_tokenizer_decoding(parity):
    io, tokenizer = parity.io, parity.tokenizer
    with torch.no_grad():
        assert_close(tokenizer.decode_fhat(io["vae_fhat_list"][-1]), io["vae_rec_last"], "decode(f̂ last)")
    assert_close(tokenizer.decode(token_maps(io)), io["vae_idxBl_to_img_last"], "decode(token maps)")
    assert_all_close(
        tokenizer.quantizer.fhat_from_tokens(token_maps(io)), io["vae_embed_to_fhat_all"], "f̂ from code embeddings"
    )


def test_tokenizer_training_forward(parity):
    io, tokenizer = parity.io, parity.tokenizer
    out = tokenizer(io["inp_img"])
    assert_close(out.reconstruction, io["vae_forward_rec"], "straight-through reconstruction")
    assert_close(out.vq_loss, io["vae_forward_vq_loss"], "VQ loss (β = 0.25)")
    assert_tokens_equal(out.token_maps, io["vae_idxBl"], "training-forward token maps")


# ---- transformer, teacher forcing ----------------------------------------------------------------------------------


def test_teacher_input_targets_and_logits(parity):
    io, tokenizer, model = parity.io, parity.tokenizer, parity.model
    assert not model.training
    maps = token_maps(io)
    teacher_input = tokenizer.teacher_input(maps)
    assert_close(teacher_input, io["var_teacher_input"], "teacher-forcing input")
    assert torch.equal(torch.cat([m.flatten(1) for m in maps], dim=1), io["gt_BL"])
    labels = io["label_B"]
    with torch.no_grad():
        assert_close(model(labels, teacher_input), io["var_logits_BLV"], "conditional logits")
        null_B = torch.full_like(labels, model.config.null_class)
        assert_close(model(null_B, teacher_input), io["var_logits_uncond"], "unconditional logits")


def test_label_dropout_reproduces_the_official_draw(parity):
    io, model = parity.io, parity.model
    labels = io["label_B"]
    torch.manual_seed(1234)
    dropped = model.drop_labels(labels, 0.5)
    expected = torch.where(io["conddrop_mask_seed1234_p0.5"], model.config.null_class, labels)
    assert torch.equal(dropped, expected)
    with torch.no_grad():
        logits = model(dropped, io["var_teacher_input"])
    assert_close(logits, io["var_logits_conddrop_seed1234_p0.5"], "logits after label dropout")


def test_the_trainers_loss_gradients_and_logged_metrics(parity):
    """The loss and metrics as `nextscale train` computes them (`teacher_forced_loss`, the function its step calls):
    every token weighted 1/L, label smoothing, the global gradient norm, and L_mean/L_tail/acc_mean/acc_tail."""
    io, tokenizer, model = parity.io, parity.tokenizer, parity.model
    names, params = zip(*model.named_parameters())
    for p in params:
        p.requires_grad_(True)
    maps, labels = token_maps(io), io["label_B"]
    loss, metrics = teacher_forced_loss(model, tokenizer, maps, labels)
    assert_close(loss, io["train_loss"], "train_loss")
    smoothed, smoothed_metrics = teacher_forced_loss(model, tokenizer, maps, labels, label_smoothing=0.1)
    assert_close(smoothed, io["train_loss_ls0.1"], "train_loss with label smoothing 0.1")
    assert_close(smoothed_metrics["L_mean"], io["L_mean"], "L_mean stays plain cross-entropy under smoothing")

    grads = torch.autograd.grad(loss, params)
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert_close(grad_norm, io["grad_norm"], "global gradient norm")
    official_grads = rename(dict(zip(names, grads)), VAR_NAMES, reverse=True)
    assert io["grads"], "the fixture lists gradients"
    for name, expected in io["grads"].items():
        assert_close(official_grads[name], expected, f"gradient of {name}")
    for name in ("L_mean", "L_tail", "acc_mean", "acc_tail"):
        assert_close(metrics[name], io[name], name)


# ---- sampling and editing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", SAMPLE_RUNS)
def test_sampling_run(parity, run):
    io, tokenizer, model = parity.io, parity.tokenizer, parity.model
    spec = io["samples"][run]
    kwargs = dict(spec["kwargs"])
    labels = kwargs.pop("label_B", io["label_B"])
    with nullcontext() if "img01" in spec else decoder_skipped(tokenizer):
        out = generate(
            model, tokenizer, labels, seed=spec["g_seed"], batch_size=len(io["label_B"]), trace=True, **kwargs
        )
    assert_tokens_equal(out.token_maps, spec["idx_per_scale"], f"{run} tokens")
    for field, traced in (
        ("logits_per_scale", "logits"),
        ("fhat_per_scale", "fhat"),
        ("next_input_per_scale", "next_input"),
    ):
        if field in spec:
            assert_all_close(out.trace[traced], spec[field], f"{run} {traced}")
    if "img01" in spec and "fhat_per_scale" in spec:
        assert_image(out, spec, tokenizer, f"{run} image")
    elif "img01" in spec:
        assert_close(out.images, spec["img01"], f"{run} image")


@pytest.mark.parametrize("run", EDIT_RUNS)
def test_edit_run(parity, run):
    io, tokenizer, model = parity.io, parity.tokenizer, parity.model
    spec = io["edits"][run]
    out = edit(
        model,
        tokenizer,
        io["inp_img"],
        spec["keep_mask"],
        spec["label_B"],
        seed=spec["g_seed"],
        trace=True,
        **spec["kwargs"],
    )
    assert_tokens_equal(out.trace["drawn"], spec["idx_per_scale"], f"{run} drawn tokens")
    assert_tokens_equal(out.token_maps, spec["final_idx_per_scale"], f"{run} tokens used")
    assert_all_close(out.trace["fhat"], spec["fhat_per_scale"], f"{run} f̂")
    assert_image(out, spec, tokenizer, f"{run} image")


@pytest.mark.parametrize("name", ["tiny_b", "tiny_e"])
def test_the_stored_fixtures_are_the_official_files(name):
    """The tokenizers rebuilt from tests/assets' deltas, and the copied files, equal ../shared/parity's originals."""
    from conftest import SHARED_PARITY, parity_dir

    if not (SHARED_PARITY / f"{name}_vae.pth").is_file():
        pytest.skip(f"{SHARED_PARITY} is not beside this checkout: nothing to compare the stored copy with")
    for part in ("vae.pth", "var.pth"):
        rebuilt = torch.load(parity_dir(name) / f"{name}_{part}", weights_only=True)
        original = torch.load(SHARED_PARITY / f"{name}_{part}", weights_only=True)
        assert list(rebuilt) == list(original), part
        assert all(torch.equal(rebuilt[k], original[k]) for k in original), part
    assert (parity_dir(name) / f"{name}_io.pt").read_bytes() == (SHARED_PARITY / f"{name}_io.pt").read_bytes()
