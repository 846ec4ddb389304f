"""The raster (next-token) baseline: causality, KV-cached sampling against teacher forcing, memorising a batch,
save/load, the plain block against hand-written attention, seeds, initialisation, presets and bad inputs."""

import copy
import json
import math

import pytest
import torch
from conftest import perturb_
from safetensors.torch import save_file

from nextscale.config_io import config_from_dict, config_to_dict
from nextscale.inference import prepare_for_inference
from nextscale.model.blocks import PlainBlock
from nextscale.model.config import var_preset
from nextscale.model.raster import RASTER_PRESETS, RasterConfig, RasterTransformer, raster_preset
from nextscale.model.var import VAR, cross_entropy_per_token
from nextscale.raster_sampling import generate_raster
from nextscale.sampling import SamplingSettings
from nextscale.token_space import TokenSpace
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset
from nextscale.weights import CheckpointError, load_strict, read_safetensors

CHANGED = 1e-3  # a logit "changes" when it moves by more than this; perturbed debug logits move by ~0.1 or more
L = 16  # the debug tokenizer with patch_nums=(4,): one 4×4 token map for 8-px images
V = 64


def one_scale_pair(seed: int = 0, perturb: bool = True, **overrides) -> tuple[Tokenizer, RasterTransformer]:
    """The debug tokenizer on one 4×4 scale and the debug raster model built from its token space, eval mode;
    the model's parameters get seeded noise so that every block really changes its input."""
    torch.manual_seed(seed)
    tokenizer = Tokenizer(tokenizer_preset("debug", patch_nums=(4,))).eval()
    model = RasterTransformer(raster_preset("debug", **overrides), tokenizer.token_space)
    return tokenizer, (perturb_(model, seed=seed) if perturb else model).eval()


def random_tokens(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, L), generator=torch.Generator().manual_seed(seed))


def test_the_one_scale_tokenizer_round_trips_its_single_map():
    """K = 1: one 4×4 map, no teacher input for later scales, and decode(encode) is the decoder of φ(embedding)."""
    tokenizer, model = one_scale_pair()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    maps = tokenizer.encode(images)
    assert [tuple(m.shape) for m in maps] == [(2, 4, 4)]
    assert model.sequence_length == L and model.side == 4
    assert tokenizer.teacher_input(maps).shape == (2, 0, 8)
    with torch.no_grad():
        f_hat = tokenizer.quantizer.refine(0, tokenizer.quantizer.embed(maps[0]))
        torch.testing.assert_close(tokenizer.decode(maps), tokenizer.decode_fhat(f_hat), atol=1e-6, rtol=0)


# ---- causality ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 6, L - 2, L - 1])
def test_changing_token_t_moves_only_later_logits(t):
    """Position i predicts token i from the class and tokens < i, so a new token t leaves every logit at positions
    ≤ t bit-for-bit alone and moves every later one (the last token is a target only and moves nothing)."""
    _, model = one_scale_pair()
    tokens = random_tokens(2)
    changed = tokens.clone()
    changed[:, t] = (tokens[:, t] + 17) % V
    labels = torch.tensor([3, 8])
    with torch.no_grad():
        delta_L = (model(labels, changed) - model(labels, tokens)).abs().amax(dim=(0, 2))
    assert delta_L[: t + 1].max().item() == 0.0, f"a position ≤ {t} saw token {t}"
    if t < L - 1:
        assert delta_L[t + 1 :].min().item() > CHANGED, f"some position after {t} ignored token {t}"


def test_the_class_reaches_every_position_and_a_prefix_equals_the_full_forward():
    _, model = one_scale_pair()
    tokens = random_tokens(2)
    with torch.no_grad():
        full = model(torch.tensor([1, 2]), tokens)
        other = model(torch.tensor([1, 5]), tokens)
        assert full.shape == (2, L, V)
        assert (other[1] - full[1]).abs().amax(dim=-1).min() > CHANGED and torch.equal(other[0], full[0])
        for t in (1, 5, L):
            torch.testing.assert_close(model(torch.tensor([1, 2]), tokens[:, :t]), full[:, :t], atol=1e-6, rtol=0)
        torch.testing.assert_close(model(torch.tensor([1, 2]), tokens.view(2, 4, 4)), full, atol=0, rtol=0)


# ---- decoding ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [0.0, 2.0])
def test_kv_cached_sampling_matches_teacher_forcing(cfg):
    """Teacher forcing on the sampled tokens gives the logits the KV-cached sampler saw at every step: directly with
    cfg = 0, and as (1+cfg)·cond − cfg·uncond (constant guidance) otherwise. The image is the decoded token map."""
    tokenizer, model = one_scale_pair()
    out = generate_raster(model, tokenizer, [1, 4, 7], cfg=cfg, top_k=20, seed=3, trace=True)
    tokens_BL = out.token_maps[0].flatten(1)
    assert out.token_maps[0].shape == (3, 4, 4) and len(out.trace["logits"]) == L
    assert torch.equal(torch.cat(out.trace["drawn"], dim=1), tokens_BL)
    with torch.no_grad():
        cond = model(out.labels, tokens_BL)
        uncond = model(torch.full_like(out.labels, model.config.null_class), tokens_BL)
    expected = (1 + cfg) * cond - cfg * uncond
    torch.testing.assert_close(torch.cat(out.trace["logits"], dim=1), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.images, (tokenizer.decode(out.token_maps) + 1) / 2, atol=1e-6, rtol=0)
    assert out.images.shape == (3, 3, 8, 8) and out.images.min() >= 0 and out.images.max() <= 1


def test_a_prompt_fed_in_one_step_then_token_by_token_matches_teacher_forcing():
    """`step` with several positions is causal among them (a prompt), and the cache continues from there."""
    _, model = one_scale_pair()
    tokens, labels = random_tokens(2, seed=1), torch.tensor([0, 9])
    with torch.no_grad():
        expected = model(labels, tokens)
        cache = model.new_cache()
        prompt = torch.cat((model.start_input(labels), model.token_input(tokens[:, :5], 0)), dim=1)
        parts = [model.step(prompt, cache)]
        for t in range(5, L - 1):
            parts.append(model.step(model.token_input(tokens[:, t : t + 1], t), cache))
    torch.testing.assert_close(torch.cat(parts, dim=1), expected, atol=1e-5, rtol=0)


def test_same_seed_same_images_different_seed_different_images():
    tokenizer, model = one_scale_pair()
    a = generate_raster(model, tokenizer, [2, 5], cfg=1.5, seed=11)
    b = generate_raster(model, tokenizer, [2, 5], cfg=1.5, seed=11)
    c = generate_raster(model, tokenizer, [2, 5], cfg=1.5, seed=12)
    assert torch.equal(a.token_maps[0], b.token_maps[0]) and torch.equal(a.images, b.images)
    assert not torch.equal(a.token_maps[0], c.token_maps[0])
    assert (a.images - c.images).abs().max() > 1e-3
    random = generate_raster(model, tokenizer, None, batch_size=6, seed=4)
    again = generate_raster(model, tokenizer, None, batch_size=6, seed=4)
    assert torch.equal(random.labels, again.labels) and torch.equal(random.token_maps[0], again.token_maps[0])


def test_prepared_for_inference_fp32_draws_the_same_tokens_and_bf16_weights_run():
    """`nextscale.inference.prepare_for_inference` works on the raster model as on VAR."""
    tokenizer, model = one_scale_pair()
    reference = generate_raster(model, tokenizer, [1, 2, 3], cfg=1.5, top_k=8, seed=3)
    fast_tokenizer, fast_model = prepare_for_inference(copy.deepcopy(tokenizer), copy.deepcopy(model))
    out = generate_raster(fast_model, fast_tokenizer, [1, 2, 3], cfg=1.5, top_k=8, seed=3)
    assert torch.equal(out.token_maps[0], reference.token_maps[0])
    torch.testing.assert_close(out.images, reference.images, atol=1e-5, rtol=0)
    bf16_tokenizer, bf16_model = prepare_for_inference(
        copy.deepcopy(tokenizer), copy.deepcopy(model), dtype=torch.bfloat16
    )
    assert all(p.dtype == torch.bfloat16 for p in bf16_model.parameters())
    out = generate_raster(bf16_model, bf16_tokenizer, [1, 2, 3], cfg=1.5, top_k=8, seed=3, trace=True)
    assert all(logits.dtype == torch.float32 for logits in out.trace["logits"])
    assert out.images.dtype == torch.float32 and out.images.min() >= 0 and out.images.max() <= 1


# ---- training ----------------------------------------------------------------------------------------------------


def test_memorises_one_batch_and_greedy_sampling_replays_it():
    """AdamW on one batch of 8 random sequences (distinct classes) drives the loss to ~0 and the accuracy to 100%;
    greedy decoding (top_k = 1, no guidance) then writes exactly those sequences."""
    tokenizer, model = one_scale_pair(perturb=False, label_dropout=0.0)
    tokens, labels = random_tokens(8, seed=5), torch.arange(8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(150):
        loss = cross_entropy_per_token(model(labels, tokens), tokens).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(labels, tokens)
    assert cross_entropy_per_token(logits, tokens).mean().item() < 0.05
    assert torch.equal(logits.argmax(-1), tokens)
    replay = generate_raster(model, tokenizer, labels, cfg=0.0, top_k=1, seed=0)
    assert torch.equal(replay.token_maps[0].flatten(1), tokens)


def test_labels_are_dropped_in_training_mode_only():
    _, model = one_scale_pair(label_dropout=0.5)
    tokens, labels = random_tokens(16), torch.arange(16) % 10
    null = model.config.null_class
    torch.manual_seed(7)
    dropped = model.drop_labels(labels)
    assert 0 < (dropped == null).sum() < 16 and torch.equal(dropped[dropped != null], labels[dropped != null])
    with torch.no_grad():
        expected = model.eval()(dropped, tokens)
        torch.manual_seed(7)
        trained = model.train()(labels, tokens)
        kept = model.train()(labels, tokens, drop_labels=False)
        evaluated = model.eval()(labels, tokens)
    torch.testing.assert_close(trained, expected, atol=1e-6, rtol=0)
    assert torch.equal(kept, evaluated) and not torch.allclose(evaluated, expected)


def test_init_weights_follows_gpt2():
    """Linears and embeddings N(0, 0.02) with zero biases; residual projections 0.02/√(2·depth); LayerNorms (1, 0)."""
    torch.manual_seed(0)
    config = RasterConfig(depth=3, width=256, num_heads=4, num_classes=10)
    model = RasterTransformer(config, TokenSpace(512, 16, (8,)))
    residual_std = 0.02 / math.sqrt(2 * 3)
    for block in model.blocks:
        assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.03)
        assert block.mlp.fc1.weight.std().item() == pytest.approx(0.02, rel=0.03)
        assert block.attn.proj.weight.std().item() == pytest.approx(residual_std, rel=0.03)
        assert block.mlp.fc2.weight.std().item() == pytest.approx(residual_std, rel=0.03)
        assert block.mlp.fc1.bias.abs().max() == 0 and block.attn.q_bias.abs().max() == 0
        assert torch.equal(block.norm1.weight, torch.ones(256)) and block.norm2.bias.abs().max() == 0
    for weight in (model.token_embed.weight, model.pos_embed, model.head.weight):
        assert weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.head.bias.abs().max() == 0


# ---- save / load -------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    """Weights as safetensors and the config as JSON (what `pretrained.save_part` writes) rebuild the same model;
    the causal mask is derived, not saved; a checkpoint of another depth does not fit."""
    tokenizer, model = one_scale_pair(l2_norm_attention=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(model.config.to_dict()))
    assert model.config.to_dict() == config_to_dict(model.config)
    assert not any("mask" in key for key in model.state_dict())

    config = config_from_dict(RasterConfig, json.loads((tmp_path / "config.json").read_text()), "config.json")
    assert config == model.config
    loaded = RasterTransformer(config, tokenizer.token_space)
    load_strict(loaded, read_safetensors(tmp_path / "model.safetensors"), "raster weights")
    loaded.eval()
    tokens, labels = random_tokens(2), torch.tensor([3, 10])
    with torch.no_grad():
        assert torch.equal(loaded(labels, tokens), model(labels, tokens))
    deeper = RasterTransformer(raster_preset("debug", depth=3), tokenizer.token_space)
    with pytest.raises(CheckpointError, match="missing keys: blocks.2"):
        load_strict(deeper, read_safetensors(tmp_path / "model.safetensors"), "raster weights")


# ---- the plain block ---------------------------------------------------------------------------------------------


def hand_written_block(block: PlainBlock, x_BLC: torch.Tensor, mask_LL: torch.Tensor, scale: float) -> torch.Tensor:
    """x + proj(softmax(q·kᵀ·scale, masked)·v) on LN1(x), then + fc2(gelu(fc1(LN2(x)))), every step spelt out."""

    def layer_norm(x, norm):
        mean, var = x.mean(-1, keepdim=True), x.var(-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    attn, B, T, C = block.attn, *x_BLC.shape
    H, c = attn.num_heads, C // attn.num_heads
    w_q, w_k, w_v = attn.qkv.weight.split(C)
    h = layer_norm(x_BLC, block.norm1)
    q, k, v = (
        (h @ w.T + b).view(B, T, H, c).transpose(1, 2) for w, b in ((w_q, attn.q_bias), (w_k, 0.0), (w_v, attn.v_bias))
    )
    scores = (q @ k.transpose(-1, -2) * scale).masked_fill(~mask_LL, float("-inf"))
    mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
    x_BLC = x_BLC + mixed @ attn.proj.weight.T + attn.proj.bias
    h = layer_norm(x_BLC, block.norm2)
    hidden = h @ block.mlp.fc1.weight.T + block.mlp.fc1.bias
    gelu = 0.5 * hidden * (1 + torch.tanh(math.sqrt(2 / math.pi) * (hidden + 0.044715 * hidden**3)))
    return x_BLC + gelu @ block.mlp.fc2.weight.T + block.mlp.fc2.bias


@pytest.mark.parametrize("attention_scale", [None, 1 / math.sqrt(16)])
def test_plain_block_with_attention_norm_off_is_plain_scaled_dot_product_attention(attention_scale):
    """Default temperature: SelfAttention's (the official 0.25/√c); the raster model's: GPT-2's 1/√c."""
    torch.manual_seed(0)
    kwargs = dict(width=32, num_heads=2, mlp_ratio=2.0, drop_path=0.0, norm_eps=1e-5)
    block = perturb_(PlainBlock(**kwargs, l2_norm_attention=False, attention_scale=attention_scale), std=0.3)
    x = torch.randn(2, 6, 32)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    scale = 0.25 / math.sqrt(16) if attention_scale is None else attention_scale
    with torch.no_grad():
        torch.testing.assert_close(block(x, causal), hand_written_block(block, x, causal, scale), atol=1e-5, rtol=0)
        normed = perturb_(PlainBlock(**kwargs, l2_norm_attention=True), std=0.3)
        normed.load_state_dict(block.state_dict(), strict=False)  # the same weights, plus a learned temperature
        assert not torch.allclose(normed(x, causal), block(x, causal), atol=1e-3)
    names = {name for name, _ in block.named_parameters()}
    assert not any("adaln" in name for name in names)
    assert {name for name, _ in normed.named_parameters()} - names == {"attn.logit_scale"}
    with pytest.raises(ValueError, match="plain attention only"):
        PlainBlock(**kwargs, l2_norm_attention=True, attention_scale=0.1)


# ---- presets and errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fmnist-tiny", "fmnist-small"])
def test_fmnist_presets_match_the_var_presets_in_parameters(name):
    """Built on the fmnist-32 token space (V 512, 16 channels): VAR on scales 1…8, the raster model on (8,)."""
    with torch.device("meta"):
        var = VAR(var_preset(name), TokenSpace(512, 16, (1, 2, 3, 4, 6, 8)))
        raster = RasterTransformer(raster_preset(name), TokenSpace(512, 16, (8,)))
    count_var, count_raster = (sum(p.numel() for p in m.parameters()) for m in (var, raster))
    assert abs(count_raster / count_var - 1) < 0.03, (count_raster, count_var)
    assert {"debug", "fmnist-tiny", "fmnist-small"} <= set(RASTER_PRESETS)


def one_line_error(error_type, match, call):
    with pytest.raises(error_type, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_bad_inputs_give_one_line_errors():
    tokenizer, model = one_scale_pair()
    multi_scale = tokenizer_preset("debug").token_space
    one_line_error(ValueError, "one-scale tokenizer", lambda: RasterTransformer(raster_preset("debug"), multi_scale))
    one_line_error(ValueError, "outside", lambda: generate_raster(model, tokenizer, [3, 11], seed=0))
    one_line_error(ValueError, "outside", lambda: generate_raster(model, tokenizer, [-2], seed=0))
    other = Tokenizer(tokenizer_preset("debug", patch_nums=(4,), vocab_size=32))
    one_line_error(ValueError, "another tokenizer", lambda: generate_raster(model, tokenizer=other, labels=[1]))
    quality = SamplingSettings(more_smooth=True)
    one_line_error(ValueError, "more_smooth", lambda: generate_raster(model, tokenizer, [1], quality))
    one_line_error(ValueError, "top_k", lambda: generate_raster(model, tokenizer, [1], top_k=-1))
    one_line_error(ValueError, "tokens", lambda: model(torch.tensor([1]), random_tokens(1).repeat(1, 2)))
    one_line_error(ValueError, "not divisible", lambda: RasterConfig(depth=2, width=64, num_heads=3))
    one_line_error(ValueError, "label_dropout", lambda: RasterConfig(depth=2, label_dropout=1.0))
    one_line_error(KeyError, "unknown raster preset", lambda: raster_preset("gpt2-huge"))
    one_line_error(ValueError, "d: RasterConfig has no field", lambda: config_from_dict(RasterConfig, {"wpe": 1}, "d"))


def test_without_guidance_the_raster_sampler_runs_one_row_per_image():
    """cfg 0 changes nothing but the work: no null-class rows, the tokens of a guidance too small to move a logit."""
    tokenizer, model = one_scale_pair()
    rows, step = [], model.step

    def counting(x_B1C, cache):
        rows.append(x_B1C.shape[0])
        return step(x_B1C, cache)

    model.step = counting
    unguided = generate_raster(model, tokenizer, [1, 2, 3], cfg=0.0, seed=4, trace=True)
    assert rows == [3] * L
    rows.clear()
    both = generate_raster(model, tokenizer, [1, 2, 3], cfg=1e-30, seed=4, trace=True)
    assert rows == [6] * L
    torch.testing.assert_close(torch.stack(unguided.trace["logits"]), torch.stack(both.trace["logits"]))
    assert torch.equal(unguided.token_maps[0], both.token_maps[0])
