"""Sampling: the KV-cached loop against teacher forcing, CFG, seeds, top-k/top-p, labels, zero-shot editing."""

import pytest
import torch
import torch.nn.functional as F

from nextscale.editing import edit, keep_masks_per_scale
from nextscale.errors import UsageError
from nextscale.sampling import (
    SamplingSettings,
    draw_tokens,
    filter_top_k_top_p_,
    generate,
    resolve_labels,
    sample_inverse_cdf,
    sample_scales,
    sample_top_k_top_p,
)


def images_for(tokenizer, batch: int, seed: int = 0) -> torch.Tensor:
    size = tokenizer.config.image_size
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def random_logits(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 3


# ---- the sampler against teacher forcing ------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_kv_cached_sampling_matches_teacher_forcing(debug_models, cfg):
    """With the sampled tokens as teacher input, the masked full-sequence forward must give the logits that the
    KV-cached sampler saw at every scale: directly with cfg = 0, and as (1+t)·cond − t·uncond with the guidance
    t = cfg·k/(K−1) that ramps from 0 at the first scale. The sampler's next inputs and image follow from its tokens."""
    tokenizer, model = debug_models
    out = generate(model, tokenizer, [1, 4, 7], cfg=cfg, seed=3, trace=True)
    teacher_input = tokenizer.teacher_input(out.token_maps)
    with torch.no_grad():
        cond = model(out.labels, teacher_input)
        uncond = model(torch.full_like(out.labels, model.config.null_class), teacher_input)
    K = model.schedule.num_scales
    for k in range(K):
        begin, end = model.schedule.span(k)
        t = cfg * k / (K - 1)
        expected = (1 + t) * cond[:, begin:end] - t * uncond[:, begin:end]
        torch.testing.assert_close(out.trace["logits"][k], expected, atol=1e-5, rtol=0, msg=f"scale {k}")
        if k < K - 1:
            next_input = out.trace["next_input"][k].flatten(2).transpose(1, 2)
            nb, ne = (o - model.schedule.first_length for o in model.schedule.span(k + 1))
            torch.testing.assert_close(next_input, teacher_input[:, nb:ne], atol=1e-6, rtol=0)
    torch.testing.assert_close(
        out.trace["fhat"][-1], tokenizer.quantizer.fhat_from_tokens(out.token_maps)[-1], atol=1e-6, rtol=0
    )
    torch.testing.assert_close(out.images, (tokenizer.decode(out.token_maps) + 1) / 2, atol=1e-5, rtol=0)
    assert out.images.shape == (3, 3, 8, 8) and out.images.min() >= 0 and out.images.max() <= 1


def test_same_seed_same_images_different_seed_different_images(debug_models):
    tokenizer, model = debug_models
    a = generate(model, tokenizer, [2, 5], cfg=1.5, seed=11)
    b = generate(model, tokenizer, [2, 5], cfg=1.5, seed=11)
    c = generate(model, tokenizer, [2, 5], cfg=1.5, seed=12)
    assert all(torch.equal(x, y) for x, y in zip(a.token_maps, b.token_maps))
    assert torch.equal(a.images, b.images)
    assert any(not torch.equal(x, y) for x, y in zip(a.token_maps, c.token_maps))
    assert (a.images - c.images).abs().max() > 1e-3


def test_seeded_sampling_leaves_the_global_rng_alone(debug_models):
    tokenizer, model = debug_models
    torch.manual_seed(0)
    state = torch.get_rng_state()
    generate(model, tokenizer, None, batch_size=2, cfg=1.5, top_k=10, top_p=0.9, more_smooth=True, seed=1)
    assert torch.equal(torch.get_rng_state(), state)


# ---- top-k / top-p --------------------------------------------------------------------------------------------------


def test_top_k_1_draws_the_argmax():
    logits = random_logits(4, 50, 64)
    expected = logits.argmax(dim=-1)
    for seed in range(3):
        drawn = sample_top_k_top_p(logits.clone(), top_k=1, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(drawn, expected)


def test_top_k_masks_all_but_the_k_largest_and_keeps_ties():
    logits = random_logits(2, 30, 64)
    masked = logits.clone()
    drawn = sample_top_k_top_p(masked, top_k=5, generator=torch.Generator().manual_seed(0))
    top5 = logits.topk(5, dim=-1).indices
    assert torch.equal(torch.isfinite(masked).sum(-1), torch.full((2, 30), 5))
    assert torch.isfinite(masked.gather(-1, top5)).all()
    assert (drawn[..., None] == top5).any(-1).all()
    tied = torch.tensor([[[5.0, 1.0, 5.0, 5.0, 0.0]]])
    sample_top_k_top_p(tied, top_k=1)
    assert torch.isfinite(tied).tolist() == [[[True, False, True, True, False]]]


def test_top_p_keeps_the_smallest_set_with_that_mass():
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log().view(1, 1, 4)
    masked = logits.clone()
    sample_top_k_top_p(masked, top_p=0.75)  # drop while ascending cumulative mass ≤ 0.25: 0.05, 0.15
    assert torch.isfinite(masked).flatten().tolist() == [True, True, False, False]


@pytest.mark.parametrize("top_p", [1e-9, 1e-6, 0.01, 0.2])
def test_top_p_always_keeps_the_most_likely_token(top_p):
    logits = random_logits(3, 40, 64, seed=1) * 0.01  # nearly uniform: no token holds the mass alone
    masked = logits.clone()
    drawn = sample_top_k_top_p(masked, top_p=top_p, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(masked.gather(-1, logits.argmax(-1, keepdim=True))).all()
    if top_p <= 0.01:  # 0.99 of the mass can be dropped: only the most likely token is left
        assert torch.equal(drawn, logits.argmax(-1))


def test_masked_tokens_are_never_drawn():
    row = random_logits(64, seed=2) / 3
    logits = row.expand(1, 4000, 64).clone()
    masked = logits.clone()
    drawn = sample_top_k_top_p(masked, top_k=10, top_p=0.8, generator=torch.Generator().manual_seed(0))
    kept = torch.isfinite(masked[0, 0])
    assert 1 < kept.sum() <= 10
    assert kept[drawn.flatten()].all()
    assert len(drawn.unique()) > 1  # it does sample, not just take the argmax
    # the kept set, computed independently: the 10 largest, then the most likely ones up to 80% of their mass
    probs, order = row.topk(10).values.softmax(-1), row.topk(10).indices
    cumulative_before = torch.cat([torch.zeros(1), probs.cumsum(0)[:-1]])
    expected = torch.zeros(64, dtype=torch.bool)
    expected[order[cumulative_before < 0.8]] = True
    assert torch.equal(kept, expected)


# ---- the inverse-CDF draw ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("top_k, top_p", [(0, 0.0), (6, 0.0), (0, 0.7), (6, 0.7), (64, 0.0), (200, 0.5)])
def test_inverse_cdf_draws_the_filtered_distribution(top_k, top_p):
    """The same distribution as the official draw: over 40,000 positions with one row of logits, every token's
    frequency is within 4.5 binomial sds of its filtered softmax probability, and filtered tokens never come."""
    row = random_logits(64, seed=3) / 3
    probs = filter_top_k_top_p_(row.view(1, 1, 64).clone(), top_k, top_p).softmax(-1).flatten()
    logits = row.expand(2, 20_000, 64).clone()
    drawn = sample_inverse_cdf(logits, top_k, top_p, generator=torch.Generator().manual_seed(0))
    assert drawn.shape == (2, 20_000) and drawn.dtype == torch.int64
    assert torch.equal(logits, row.expand(2, 20_000, 64))  # the logits are left as they are
    counts = torch.bincount(drawn.flatten(), minlength=64).double()
    n = drawn.numel()
    assert counts[probs == 0].sum() == 0
    sd = (n * probs * (1 - probs)).sqrt().double().clamp(min=1.0)
    assert ((counts - n * probs.double()).abs() <= 4.5 * sd).all(), (counts, n * probs)


def test_inverse_cdf_top_k_1_draws_the_argmax_and_uses_one_number_per_token():
    logits = random_logits(4, 50, 64)
    drawn = sample_inverse_cdf(logits, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(drawn, logits.argmax(-1))
    generator = torch.Generator().manual_seed(5)
    sample_inverse_cdf(random_logits(3, 7, 64), top_k=10, generator=generator)
    reference = torch.Generator().manual_seed(5)
    torch.rand(3 * 7, generator=reference)  # the draw spent exactly one uniform number per position
    assert torch.equal(generator.get_state(), reference.get_state())


def test_draw_tokens_is_the_official_draw_unless_inverse_cdf():
    logits = random_logits(2, 30, 64)
    settings = SamplingSettings(top_k=9, top_p=0.9)
    official = sample_top_k_top_p(logits.clone(), 9, 0.9, torch.Generator().manual_seed(1))
    assert torch.equal(draw_tokens(logits.clone(), settings, torch.Generator().manual_seed(1)), official)
    inverse = SamplingSettings(top_k=9, top_p=0.9, inverse_cdf=True)
    drawn = draw_tokens(logits.clone(), inverse, torch.Generator().manual_seed(1))
    kept = torch.isfinite(filter_top_k_top_p_(logits.clone(), 9, 0.9))
    assert kept.gather(-1, drawn[..., None]).all() and not torch.equal(drawn, official)
    smoothed = SamplingSettings(top_k=9, top_p=0.9, inverse_cdf=True, more_smooth=True)
    masked = logits.clone()
    drawn = draw_tokens(masked, smoothed, torch.Generator().manual_seed(1))  # Gumbel smoothing reads the filter
    assert torch.equal(torch.isfinite(masked), kept) and kept.gather(-1, drawn[..., None]).all()


def test_inverse_cdf_sampling_draws_other_tokens_of_the_same_model(debug_models):
    tokenizer, model = debug_models
    exact = generate(model, tokenizer, [1, 2, 3], cfg=1.5, top_k=20, seed=4)
    again = generate(model, tokenizer, [1, 2, 3], cfg=1.5, top_k=20, seed=4)
    fast = generate(model, tokenizer, [1, 2, 3], SamplingSettings(cfg=1.5, top_k=20, inverse_cdf=True), seed=4)
    assert all(torch.equal(a, b) for a, b in zip(exact.token_maps, again.token_maps))
    assert any(not torch.equal(a, b) for a, b in zip(exact.token_maps, fast.token_maps))
    assert [m.shape for m in fast.token_maps] == [m.shape for m in exact.token_maps]
    assert fast.images.shape == exact.images.shape


def test_sampling_settings_are_validated():
    with pytest.raises(ValueError, match="top_k"):
        SamplingSettings(top_k=-1)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=1.5)


# ---- labels ---------------------------------------------------------------------------------------------------------


def test_labels_none_are_drawn_from_the_generator_first(debug_models):
    tokenizer, model = debug_models
    expected = torch.multinomial(
        torch.full((1, 10), 0.1), 6, replacement=True, generator=torch.Generator().manual_seed(7)
    ).flatten()
    assert torch.equal(resolve_labels(None, 10, 6, "cpu", torch.Generator().manual_seed(7)), expected)
    assert len(expected.unique()) > 1
    out = generate(model, tokenizer, None, batch_size=6, seed=7)
    assert torch.equal(out.labels, expected)
    with pytest.raises(ValueError, match="batch_size"):
        resolve_labels(None, 10, None, "cpu", None)


def test_integer_labels_fill_the_batch_and_negative_means_unconditional():
    assert resolve_labels(-1, 10, 3, "cpu", None).tolist() == [10, 10, 10]
    assert resolve_labels(4, 10, 2, "cpu", None).tolist() == [4, 4]
    assert resolve_labels([3, 10], 10, None, "cpu", None).tolist() == [3, 10]  # 10 = the null class


@pytest.mark.parametrize("labels", [[11], [0, -2], torch.tensor([12])])
def test_out_of_range_classes_are_rejected(debug_models, labels):
    tokenizer, model = debug_models
    with pytest.raises(ValueError, match="outside"):
        resolve_labels(labels, 10, None, "cpu", None)
    with pytest.raises(ValueError, match="outside"):
        generate(model, tokenizer, labels, seed=0)


def test_label_count_must_match_the_batch_size():
    with pytest.raises(ValueError, match="3 labels given for batch_size 2"):
        resolve_labels([1, 2, 3], 10, 2, "cpu", None)


# ---- zero-shot editing ----------------------------------------------------------------------------------------------


def per_scale_keep(keep_mask: torch.Tensor, sides) -> list[torch.Tensor]:
    """The reference's rule, written out: bilinear resize of the finest mask, > 0.5, scales of ≤ 3 tokens kept."""
    out = []
    for side in sides:
        resized = F.interpolate(keep_mask[None, None].float(), size=(side, side), mode="bilinear", align_corners=False)
        out.append(torch.ones(side, side, dtype=torch.bool) if side * side <= 3 else resized[0, 0] > 0.5)
    return out


def test_forcing_every_token_returns_the_reconstruction(debug_models):
    tokenizer, model = debug_models
    images = images_for(tokenizer, 2)
    given = tokenizer.encode(images)
    forced = (given, keep_masks_per_scale(torch.ones(4, 4), 2, model.schedule.patch_nums))
    labels_B, generator = torch.tensor([3, 8]), torch.Generator().manual_seed(0)
    settings = SamplingSettings(cfg=2.0, top_k=20)
    out = sample_scales(model, tokenizer, labels_B, settings, generator=generator, forced=forced, trace=True)
    assert all(torch.equal(a, b) for a, b in zip(out.token_maps, given))
    assert any(not torch.equal(d.view_as(g), g) for d, g in zip(out.trace["drawn"], given)), "the sampler did draw"
    torch.testing.assert_close(out.images, (tokenizer.decode(given) + 1) / 2, atol=1e-5, rtol=0)


def test_edit_forces_kept_tokens_and_uses_drawn_ones_elsewhere(debug_models):
    tokenizer, model = debug_models
    images = images_for(tokenizer, 2, seed=1)
    keep_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]])
    out = edit(model, tokenizer, images, keep_mask, None, cfg=1.0, seed=4, trace=True)
    assert (out.labels == model.config.null_class).all()  # no label: plain in/out-painting
    given = tokenizer.encode(images)
    keeps = per_scale_keep(keep_mask, model.schedule.patch_nums)
    generated = 0
    for k, keep in enumerate(keeps):
        drawn = out.trace["drawn"][k].view_as(given[k])
        assert torch.equal(out.token_maps[k][:, keep], given[k][:, keep]), f"scale {k}: kept tokens changed"
        assert torch.equal(out.token_maps[k][:, ~keep], drawn[:, ~keep]), f"scale {k}: generated tokens not used"
        generated += int((drawn[:, ~keep] != given[k][:, ~keep]).sum())
    assert keeps[0].all() and not keeps[-1].all()
    assert generated > 0


def test_edit_keeps_everything_at_the_one_token_scale_even_when_the_mask_keeps_one_token(debug_models):
    tokenizer, model = debug_models
    images = images_for(tokenizer, 2, seed=2)
    keep_mask = torch.zeros(4, 4)
    keep_mask[3, 3] = 1  # the resized 1×1 mask is 0, but a one-token scale is always the input's
    out = edit(model, tokenizer, images, keep_mask, [0, 1], seed=5)
    assert torch.equal(out.token_maps[0], tokenizer.encode(images)[0])


def test_edit_leaves_fhat_untouched_far_from_the_edited_region(make_debug_pair):
    """On a 16×16 grid (scales 1,2,4,8,16) with the 3×3 corner regenerated, the resized masks regenerate the
    corner token of the 4×4 and 2×2 corner of the 8×8 scale. A 4×4 token reaches finest rows/columns ≤ 9 through
    the bicubic upsampling (4 taps) and one more through φ's 3×3 conv, so f̂ must equal the reconstruction's f̂
    wherever row ≥ 11 or column ≥ 11. (Decoded pixels are not local: the decoder's GroupNorm statistics are global.)"""
    sides = (1, 2, 4, 8, 16)
    tokenizer, model = make_debug_pair(tokenizer_overrides={"patch_nums": sides})
    images = images_for(tokenizer, 2, seed=3)
    keep_mask = torch.ones(16, 16)
    keep_mask[:3, :3] = 0
    out = edit(model, tokenizer, images, keep_mask, [1, 2], cfg=1.0, seed=0, trace=True)
    reconstruction = tokenizer.quantizer.fhat_from_tokens(tokenizer.encode(images))[-1]
    delta_HW = (out.trace["fhat"][-1] - reconstruction).abs().amax(dim=(0, 1))
    far = torch.ones(16, 16, dtype=torch.bool)
    far[:11, :11] = False
    assert delta_HW[far].max() <= 1e-6
    assert delta_HW[:3, :3].max() > 1e-3  # the corner was regenerated


def test_edit_rejects_masks_of_the_wrong_shape(debug_models):
    tokenizer, model = debug_models
    images = images_for(tokenizer, 2)
    with pytest.raises(ValueError, match="keep_mask must be"):
        edit(model, tokenizer, images, torch.ones(8, 8), seed=0)
    with pytest.raises(ValueError, match="3 masks for 2 images"):
        edit(model, tokenizer, images, torch.ones(3, 4, 4), seed=0)


def test_tokenizer_and_transformer_must_fit(make_debug_pair):
    tokenizer, _ = make_debug_pair()
    _, model = make_debug_pair(tokenizer_overrides={"vocab_size": 32})
    with pytest.raises(ValueError, match="built for another tokenizer"):
        generate(model, tokenizer, [0], seed=0)


def test_bf16_autocast_sampling_agrees_with_fp32_at_the_first_scales(debug_models):
    tokenizer, model = debug_models
    fp32 = generate(model, tokenizer, [1, 2, 3], cfg=1.5, top_k=1, seed=0)
    bf16 = generate(model, tokenizer, [1, 2, 3], cfg=1.5, top_k=1, seed=0, autocast_dtype=torch.bfloat16)
    assert bf16.images.dtype == torch.float32 and bf16.images.shape == fp32.images.shape
    assert bf16.images.min() >= 0.0 and bf16.images.max() <= 1.0
    assert torch.equal(bf16.token_maps[0], fp32.token_maps[0])  # greedy 1×1 tokens: bf16 keeps the argmax
    assert (bf16.images - fp32.images).abs().mean() < 0.1


# ---- guidance only up to a given scale ------------------------------------------------------------------------------


def _rows_per_scale(model, run) -> list[int]:
    """The batch rows of every step_hidden call while `run()` samples."""
    rows, step_hidden = [], model.step_hidden

    def counting(x_BlC, cond_BD, cache):
        rows.append(x_BlC.shape[0])
        return step_hidden(x_BlC, cond_BD, cache)

    model.step_hidden = counting
    try:
        out = run()
    finally:
        del model.step_hidden
    return rows, out


def test_guidance_up_to_the_last_scale_is_the_exact_path(debug_models):
    tokenizer, model = debug_models
    K = model.schedule.num_scales
    exact = generate(model, tokenizer, [1, 2, 3], cfg=2.0, top_k=5, seed=4, trace=True)
    for scales in (0, K):
        same = generate(model, tokenizer, [1, 2, 3], cfg=2.0, top_k=5, seed=4, trace=True, guidance_scales=scales)
        assert all(torch.equal(a, b) for a, b in zip(exact.token_maps, same.token_maps))
        assert all(torch.equal(a, b) for a, b in zip(exact.trace["logits"], same.trace["logits"]))


def test_guidance_stops_after_the_given_scale_and_the_later_scales_run_one_row_per_image(debug_models):
    tokenizer, model = debug_models
    K = model.schedule.num_scales
    rows, exact = _rows_per_scale(model, lambda: generate(model, tokenizer, [1, 2, 3], cfg=3.0, seed=4, trace=True))
    assert rows == [6] * K
    rows, cut = _rows_per_scale(
        model, lambda: generate(model, tokenizer, [1, 2, 3], cfg=3.0, seed=4, trace=True, guidance_scales=2)
    )
    assert rows == [6, 6] + [3] * (K - 2)  # the unconditional rows are gone from the third scale on
    assert all(torch.equal(a, b) for a, b in zip(exact.token_maps[:2], cut.token_maps[:2]))  # guided as before
    assert any(not torch.equal(a, b) for a, b in zip(exact.token_maps[2:], cut.token_maps[2:]))


def test_without_guidance_one_row_per_image_draws_what_the_two_row_path_draws(debug_models):
    """cfg 0: the guided logits are the conditional ones, so the sampler runs no unconditional rows at all; a guidance
    too small to move a float32 logit (1e-30) still runs both rows, and gives the same logits (to float tolerance: the
    batch is smaller) and the same tokens."""
    tokenizer, model = debug_models
    K = model.schedule.num_scales
    rows, unguided = _rows_per_scale(model, lambda: generate(model, tokenizer, [1, 2, 3], cfg=0.0, seed=4, trace=True))
    assert rows == [3] * K
    rows, both = _rows_per_scale(model, lambda: generate(model, tokenizer, [1, 2, 3], cfg=1e-30, seed=4, trace=True))
    assert rows == [6] * K
    for a, b in zip(unguided.trace["logits"], both.trace["logits"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(unguided.token_maps, both.token_maps))
    refined = generate(model, tokenizer, [1, 2, 3], cfg=0.0, seed=4, refiner=model, handover_scale=2)
    assert all(torch.equal(a, b) for a, b in zip(unguided.token_maps, refined.token_maps))


def test_the_first_scale_runs_the_head_on_the_class_rows_only_and_draws_what_both_rows_draw(debug_models):
    """The guidance weight is cfg·k/(K-1): 0 at the first scale, where the guided logits are the conditional ones.
    There the unconditional rows still run through the blocks (later scales attend to their keys) but skip the
    head; the logits equal those of the head run on both rows."""
    tokenizer, model = debug_models
    K = model.schedule.num_scales
    head_rows, logits = [], model.logits

    def counting(x_BLC, cond_BD):
        head_rows.append(x_BLC.shape[0])
        return logits(x_BLC, cond_BD)

    model.logits = counting
    try:
        out = generate(model, tokenizer, [1, 2, 3], cfg=2.0, seed=4, trace=True)
    finally:
        del model.logits
    assert head_rows == [3] + [6] * (K - 1)
    with torch.no_grad():
        null = model.config.null_class
        cond = model.class_embed(torch.tensor([1, 2, 3, null, null, null]))
        both = model.logits(model.step_hidden(model.start_tokens(cond), cond, model.new_cache()), cond)
    torch.testing.assert_close(out.trace["logits"][0], both[:3], rtol=0, atol=1e-6)


def test_guidance_scales_combines_with_pruning_and_is_validated(debug_models):
    tokenizer, model = debug_models
    K = model.schedule.num_scales
    settings = SamplingSettings(cfg=2.0, prune_ratio=0.5, prune_scales=2, guidance_scales=K - 2)
    out = generate(model, tokenizer, [0, 1], settings, seed=1)
    assert out.images.shape[0] == 2 and torch.isfinite(out.images).all()
    for bad in (-1, 1.5, True):
        with pytest.raises(UsageError, match="guidance_scales"):
            SamplingSettings(guidance_scales=bad)
        with pytest.raises(UsageError, match="handover_scale"):
            SamplingSettings(handover_scale=bad)


# ---- collaborative decoding: a drafter and a refiner ----------------------------------------------------------------


def test_a_refiner_that_is_the_drafter_draws_the_single_models_tokens(debug_models):
    tokenizer, model = debug_models
    K = model.schedule.num_scales
    exact = generate(model, tokenizer, [1, 2, 3], cfg=2.0, top_k=5, seed=4, trace=True)
    for handover in range(1, K):
        same = generate(model, tokenizer, [1, 2, 3], cfg=2.0, top_k=5, seed=4, trace=True, refiner=model,
                        handover_scale=handover)  # fmt: skip
        assert all(torch.equal(a, b) for a, b in zip(exact.token_maps, same.token_maps)), handover
        assert all(torch.equal(a, b) for a, b in zip(exact.trace["logits"], same.trace["logits"])), handover


def test_the_refiner_draws_the_scales_from_the_handover_on(make_debug_pair):
    tokenizer, drafter = make_debug_pair(0)
    _, refiner = make_debug_pair(1)
    K = drafter.schedule.num_scales
    alone = generate(drafter, tokenizer, [1, 2], cfg=1.0, seed=3, trace=True)
    refined = generate(drafter, tokenizer, [1, 2], cfg=1.0, seed=3, trace=True, refiner=refiner, handover_scale=2)
    assert all(torch.equal(a, b) for a, b in zip(alone.trace["logits"][:2], refined.trace["logits"][:2]))
    assert not any(torch.equal(a, b) for a, b in zip(alone.trace["logits"][2:], refined.trace["logits"][2:]))
    # with guidance stopped before the handover, the refiner's cache has one row per image
    out = generate(drafter, tokenizer, [1, 2], cfg=1.0, seed=3, refiner=refiner, handover_scale=K - 1,
                   guidance_scales=1)  # fmt: skip
    assert torch.isfinite(out.images).all()
