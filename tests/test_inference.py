"""Fast inference (`prepare_for_inference`, the preallocated KV cache, the cached AdaLN modulation): the same tokens
as the plain path in fp32, the precision and layout it promises, and the plain fallbacks still there."""

from __future__ import annotations

import copy

import pytest
import torch

from nextscale import Pipeline, generate
from nextscale.inference import prepare_for_inference
from nextscale.model.blocks import LayerCache


def same_tokens(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.token_maps, b.token_maps))


def test_prepared_fp32_models_draw_the_same_tokens(debug_models):
    tokenizer, model = debug_models
    reference = generate(model, tokenizer, [1, 2, 3, 4], "fid", seed=3)
    fast_tokenizer, fast_model = prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model))
    assert fast_tokenizer.decoder.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    out = generate(fast_model, fast_tokenizer, [1, 2, 3, 4], "fid", seed=3)
    assert same_tokens(out, reference)
    torch.testing.assert_close(out.images, reference.images, atol=1e-5, rtol=0)


def test_bf16_weights_instead_of_autocast(debug_models):
    tokenizer, model = debug_models
    fast_tokenizer, fast_model = prepare_for_inference(
        copy.deepcopy(tokenizer), copy.deepcopy(model), dtype=torch.bfloat16, channels_last=False
    )
    assert all(p.dtype == torch.bfloat16 for p in fast_model.parameters())
    assert fast_tokenizer.decoder.conv_out.weight.dtype == torch.bfloat16
    assert fast_tokenizer.quantizer.codebook.weight.dtype == torch.float32  # f̂ is still accumulated in fp32
    greedy = dict(cfg=1.5, top_k=1)
    out = generate(fast_model, fast_tokenizer, [1, 2, 3], seed=0, trace=True, **greedy)
    reference = generate(model, tokenizer, [1, 2, 3], seed=0, **greedy)
    assert out.images.dtype == torch.float32 and out.images.min() >= 0 and out.images.max() <= 1
    assert all(logits.dtype == torch.float32 for logits in out.trace["logits"])
    assert torch.equal(out.token_maps[0], reference.token_maps[0])  # the 1×1 argmax survives bf16 rounding


def test_fast_pipeline_casts_instead_of_autocasting(debug_models):
    tokenizer, model = (copy.deepcopy(m) for m in debug_models)
    pipe = Pipeline(tokenizer, model, dtype="bf16", fast=True)
    assert pipe.autocast_dtype is None and pipe.model.head.weight.dtype == torch.bfloat16
    assert pipe.generate([0, 1], seed=0).shape == (2, 3, 8, 8)
    assert Pipeline(*(copy.deepcopy(m) for m in debug_models), dtype="bf16").autocast_dtype == torch.bfloat16


def test_preallocated_cache_equals_concatenation():
    generator = torch.Generator().manual_seed(0)
    chunks = [
        (torch.randn(2, 3, n, 4, generator=generator), torch.randn(2, 3, n, 4, generator=generator)) for n in (1, 4, 9)
    ]
    growing, preallocated = LayerCache(), LayerCache(capacity=14)
    for key, value in chunks:
        k1, v1 = growing.extend(key, value)
        k2, v2 = preallocated.extend(key, value)
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert preallocated.length == growing.length == 14
    with pytest.raises(ValueError, match="holds 14 tokens; 15 were given"):
        preallocated.extend(*chunks[0])


def test_the_modulation_is_computed_once_per_sampling(debug_models):
    tokenizer, model = debug_models
    calls = []
    handle = model.blocks[0].adaln.register_forward_hook(lambda *args: calls.append(1))
    try:
        generate(model, tokenizer, [1, 2], seed=0)
    finally:
        handle.remove()
    assert len(calls) == 1  # not once per scale: the modulation depends on the class only


def test_token_pruning_runs_fewer_tokens_at_the_largest_scales_only(debug_models):
    """FastVAR-style pruning (off by default): at the two largest scales only the kept share of tokens enters the
    transformer; the scales before are drawn exactly as without pruning; every token map is still complete."""
    tokenizer, model = debug_models
    lengths = []
    handle = model.blocks[0].register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    try:
        pruned = generate(model, tokenizer, [1, 2], "fid", seed=4, prune_ratio=0.5)
    finally:
        handle.remove()
    assert lengths == [1, 4, 4, 8]  # scales 1, 2, 3, 4: 9 → round(4.5) = 4 and 16 → 8 tokens computed
    plain = generate(model, tokenizer, [1, 2], "fid", seed=4)
    assert all(torch.equal(a, b) for a, b in zip(pruned.token_maps[:2], plain.token_maps[:2]))
    assert [m.shape[1:] for m in pruned.token_maps] == [m.shape[1:] for m in plain.token_maps]
    assert not torch.equal(pruned.images, plain.images)
    assert torch.equal(generate(model, tokenizer, [1, 2], "fid", seed=4, prune_ratio=0.0).images, plain.images)
    with pytest.raises(ValueError, match="prune_ratio must be in"):
        generate(model, tokenizer, [1], seed=0, prune_ratio=1.0)
