"""The VAR transformer: block-causal dependence on earlier scales, progressive prefixes, label dropout, presets."""

import math

import pytest
import torch

from nextscale.model.config import VAR_PRESETS, VARConfig, var_preset
from nextscale.model.var import VAR, cross_entropy_per_token
from nextscale.tokenizer.tokenizer import tokenizer_preset

CHANGED = 1e-3  # a logit "changes" when it moves by more than this; perturbed debug logits move by ~0.1 or more


def scale_slices(model: VAR) -> list[slice]:
    return [slice(*model.schedule.span(k)) for k in range(model.schedule.num_scales)]


def sample_inputs(tokenizer, batch: int = 2, seed: int = 0):
    images = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    maps = tokenizer.encode(images)
    return maps, torch.arange(batch) % 10


@pytest.mark.parametrize("k", [0, 1, 2])
def test_changing_scale_k_tokens_changes_only_later_logits(debug_models, k):
    """Scale j's logits are computed from the class and the inputs of scales ≤ j, and scale j's input is f̂ of
    scales < j. So new tokens at scale k leave every logit of scales ≤ k bit-for-bit alone and move all later ones."""
    tokenizer, model = debug_models
    maps, labels = sample_inputs(tokenizer)
    changed = list(maps)
    changed[k] = (maps[k] + 1 + torch.randint(0, 62, maps[k].shape, generator=torch.Generator().manual_seed(k))) % 64
    assert (changed[k] != maps[k]).all()
    with torch.no_grad():
        before = model(labels, tokenizer.teacher_input(maps))
        after = model(labels, tokenizer.teacher_input(changed))
    for j, span in enumerate(scale_slices(model)):
        delta = (after[:, span] - before[:, span]).abs().amax().item()
        if j <= k:
            assert delta == 0.0, f"scale {j} logits moved by {delta} after changing scale {k}"
        else:
            assert delta > CHANGED, f"scale {j} logits ignored scale {k} (moved {delta})"


@pytest.mark.parametrize("k", [1, 2, 3])
def test_one_input_token_reaches_its_whole_scale_and_later_ones_only(debug_models, k):
    """Attention within a scale is bidirectional and across scales causal: perturbing the input of one token of
    scale k (its last one) moves every logit of scale k and later scales, and none of the earlier scales."""
    tokenizer, model = debug_models
    maps, labels = sample_inputs(tokenizer)
    teacher_input = tokenizer.teacher_input(maps)
    position = model.schedule.offsets[k + 1] - 1 - model.schedule.first_length
    perturbed = teacher_input.clone()
    perturbed[:, position] += 1.0
    with torch.no_grad():
        delta_BLV = (model(labels, perturbed) - model(labels, teacher_input)).abs()
    per_token_L = delta_BLV.amax(dim=(0, 2))
    for j, span in enumerate(scale_slices(model)):
        if j < k:
            assert per_token_L[span].max().item() == 0.0, f"scale {j} saw a change at scale {k}"
        else:
            assert per_token_L[span].min().item() > CHANGED, f"some token of scale {j} ignored the change"


def test_progressive_prefix_equals_the_full_forward(debug_models):
    tokenizer, model = debug_models
    maps, labels = sample_inputs(tokenizer)
    teacher_input = tokenizer.teacher_input(maps)
    with torch.no_grad():
        full = model(labels, teacher_input)
        for num_scales in range(1, model.schedule.num_scales + 1):
            end = model.schedule.offsets[num_scales]
            prefix = model(labels, teacher_input, num_scales=num_scales)
            assert prefix.shape == (2, end, model.token_space.vocab_size)
            torch.testing.assert_close(prefix, full[:, :end], atol=1e-6, rtol=0)


def test_labels_are_dropped_in_training_mode_only(make_debug_pair):
    tokenizer, model = make_debug_pair(label_dropout=0.5)
    maps, _ = sample_inputs(tokenizer, batch=16)
    labels = torch.arange(16) % 10
    teacher_input = tokenizer.teacher_input(maps)
    null = model.config.null_class

    torch.manual_seed(7)
    dropped = model.drop_labels(labels)
    assert 0 < (dropped == null).sum() < 16, "the seed should drop some labels and keep others"
    assert torch.equal(dropped[dropped != null], labels[dropped != null])
    with torch.no_grad():
        expected = model.eval()(dropped, teacher_input)
        torch.manual_seed(7)
        trained = model.train()(labels, teacher_input)
        torch.manual_seed(7)
        evaluated = model.eval()(labels, teacher_input)
        undropped = model(labels, teacher_input)
    torch.testing.assert_close(trained, expected, atol=1e-6, rtol=0)
    assert torch.equal(evaluated, undropped)
    assert not torch.allclose(evaluated, expected)


def test_drop_labels_rates():
    model = VAR(var_preset("debug"), tokenizer_preset("debug").token_space)
    labels = torch.arange(10)
    assert torch.equal(model.drop_labels(labels, 0.0), labels)
    assert (model.drop_labels(labels, 1.0) == model.config.null_class).all()


def test_cross_entropy_per_token_is_the_unreduced_loss():
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[0, 1, 2, 3, 4], [6, 5, 4, 3, 2]])
    ce = cross_entropy_per_token(logits, targets)
    assert ce.shape == (2, 5)
    assert ce[1, 0].item() == pytest.approx(-torch.log_softmax(logits[1, 0], -1)[6].item(), abs=1e-6)
    smoothed = cross_entropy_per_token(logits, targets, label_smoothing=0.1)
    uniform = -torch.log_softmax(logits, -1).mean(-1)
    torch.testing.assert_close(smoothed, 0.9 * ce + 0.1 * uniform, atol=1e-6, rtol=0)


@pytest.mark.parametrize("depth", [16, 20, 24, 30, 36])
def test_release_presets_derive_width_heads_and_drop_path(depth):
    config = var_preset(f"var-d{depth}")
    assert (config.width, config.num_heads) == (64 * depth, depth)
    assert config.drop_path_rate == pytest.approx(0.1 * depth / 24)
    assert config.resolved_init_std == pytest.approx(math.sqrt(1 / (3 * 64 * depth)))
    assert config.shared_adaln == (depth == 36)


def test_preset_registry_and_validation():
    assert var_preset("var-d16", depth=20) == var_preset("var-d20")  # overriding depth re-derives the rest
    with pytest.raises(KeyError, match="unknown transformer preset"):
        var_preset("var-d17")
    with pytest.raises(ValueError, match="not divisible"):
        VARConfig(depth=2, width=64, num_heads=3)
    with pytest.raises(ValueError, match="label_dropout"):
        VARConfig(depth=2, label_dropout=1.0)
    assert {"var-d16", "var-d36", "fmnist-small", "debug"} <= set(VAR_PRESETS)


# ---- ablation switches (the paper's Table 3) ------------------------------------------------------------------------


def test_adaln_off_removes_exactly_the_modulation():
    """Without AdaLN a block has plain affine LayerNorms and no modulation Linear; the head loses its AdaLN; nothing
    else changes (the parameter difference is exactly those tensors)."""
    space = tokenizer_preset("debug").token_space
    with_adaln, plain = VAR(var_preset("debug"), space), VAR(var_preset("debug", adaln=False), space)
    names = {name for name, _ in plain.named_parameters()}
    assert not any("adaln" in name for name in names)
    C, depth = plain.config.width, plain.config.depth
    modulation = depth * (C * 6 * C + 6 * C) + (C * 2 * C + 2 * C)  # block AdaLN Linears and the head's
    affine = depth * 2 * (2 * C) + 2 * C  # two affine LayerNorms per block, one before the head
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(with_adaln) - count(plain) == modulation - affine
    kept = {name for name, _ in with_adaln.named_parameters() if "adaln" not in name}
    assert kept <= names  # embeddings, attention, MLP and head are the same tensors


def test_without_adaln_the_class_still_conditions_through_the_start_token(make_debug_pair):
    tokenizer, model = make_debug_pair(adaln=False)
    maps, _ = sample_inputs(tokenizer)
    teacher = tokenizer.teacher_input(maps)
    with torch.no_grad():
        a, b = model(torch.tensor([1, 1]), teacher), model(torch.tensor([2, 2]), teacher)
    assert (a - b).abs().amax() > CHANGED
    for k in range(1, model.schedule.num_scales):  # and stays block-causal
        changed = list(maps)
        changed[k] = (maps[k] + 1) % 64
        with torch.no_grad():
            moved = model(torch.tensor([1, 1]), tokenizer.teacher_input(changed))
        assert torch.equal(moved[:, : model.schedule.offsets[k + 1]], a[:, : model.schedule.offsets[k + 1]])


def test_attention_without_l2_norm_is_plain_scaled_dot_product_attention():
    from nextscale.model.blocks import SelfAttention

    torch.manual_seed(0)
    attention = SelfAttention(32, 4, l2_norm=False)
    torch.nn.init.normal_(attention.q_bias)
    x = torch.randn(2, 5, 32)
    q, k, v = (x @ attention.qkv.weight.T).split(32, dim=-1)
    q, v = q + attention.q_bias, v + attention.v_bias
    heads = lambda t: t.view(2, 5, 4, 8).transpose(1, 2)  # noqa: E731
    weights = (heads(q) @ heads(k).transpose(-1, -2) * (0.25 / math.sqrt(8))).softmax(-1)
    expected = attention.proj((weights @ heads(v)).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(attention(x), expected, atol=1e-6, rtol=0)
