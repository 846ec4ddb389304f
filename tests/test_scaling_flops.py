"""FLOPs and parameter counts from the architecture, checked against what torch counts on the real model.

FlopCounterMode counts matrix products (mm, addmm, bmm) and convolutions. On the CPU the default attention kernel
has no FLOP formula in torch, so the checks run attention through the math kernel, which computes the same dense
masked L×L products with bmm. The tokenizer's work (f̂ for the teacher input, decoding) is convolutions only in
the tokenizers used here, so every matrix product counted is the transformer's.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nextscale.model.blocks import AdaLNBlock
from nextscale.model.config import var_preset
from nextscale.model.cost import attention_pairs, block_training_flops_per_image, embedding_parameters
from nextscale.model.var import VAR
from nextscale.sampling import generate
from nextscale.scaling import (
    forward_flops_by_part,
    inference_flops_per_image,
    parameter_count,
    training_flops_per_image,
)
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset
from nextscale.train.var_task import teacher_forced_loss

MATMULS = {"aten.mm", "aten.addmm", "aten.bmm"}
TOKENIZER_OPS = {"aten.convolution"}

# (tokenizer preset, transformer preset, transformer overrides)
CONFIGS = {
    "debug": ("debug", "debug", {}),
    "d3-w96-shared-plain": (
        "debug",
        "debug",
        dict(depth=3, width=96, num_heads=3, mlp_ratio=2.5, shared_adaln=True, l2_norm_attention=False),
    ),
    "fmnist-tiny": ("fmnist-32", "fmnist-tiny", {}),
    "no-adaln": ("debug", "debug", dict(adaln=False)),
}


def build(tokenizer_name: str, var_name: str, seed: int = 0, **var_overrides) -> tuple[Tokenizer, VAR]:
    """A frozen tokenizer and a transformer over its token space (the one place that pairs them in this file). The
    fmnist-32 tokenizer's mid-block attention is switched off so that the tokenizer computes with convolutions only."""
    torch.manual_seed(seed)
    overrides = {"use_mid_attention": False} if tokenizer_name == "fmnist-32" else {}
    tokenizer = Tokenizer(tokenizer_preset(tokenizer_name, **overrides)).requires_grad_(False).eval()
    return tokenizer, VAR(var_preset(var_name, **var_overrides), tokenizer.token_space)


def random_batch(tokenizer: Tokenizer, batch: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    space = tokenizer.token_space
    maps = [torch.randint(0, space.vocab_size, (batch, p, p), generator=generator) for p in space.patch_nums]
    return maps, torch.randint(0, 10, (batch,), generator=generator)


def matmul_flops(counter: FlopCounterMode) -> int:
    """The matrix-product FLOPs counted, after checking nothing else but the tokenizer's convolutions was counted."""
    counts = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    assert set(counts) <= MATMULS | TOKENIZER_OPS, f"unexpected counted ops {set(counts) - MATMULS - TOKENIZER_OPS}"
    return sum(flops for op, flops in counts.items() if op in MATMULS)


def measured_training_flops(tokenizer, model, batches: list[int], num_scales: int | None = None) -> int:
    """FLOPs torch counts for training steps on batches of these sizes: the trainer's loss, then backward."""
    model.train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        for step, batch in enumerate(batches):
            maps, labels = random_batch(tokenizer, batch, seed=step)
            loss, _ = teacher_forced_loss(model, tokenizer, maps, labels, num_scales=num_scales)
            loss.backward()
    return matmul_flops(counter)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_flops_equal_what_torch_counts(name):
    tokenizer_name, var_name, overrides = CONFIGS[name]
    tokenizer, model = build(tokenizer_name, var_name, **overrides)
    measured = measured_training_flops(tokenizer, model, [3])
    counted = 3 * training_flops_per_image(model.config, tokenizer.token_space)
    assert counted == measured, f"{name}: counted {counted}, torch {measured} ({counted / measured - 1:+.3%})"


@pytest.mark.parametrize("num_scales", [1, 3])
def test_progressive_training_counts_only_the_trained_scales(num_scales):
    tokenizer, model = build("debug", "debug")
    measured = measured_training_flops(tokenizer, model, [2], num_scales=num_scales)
    assert measured == 2 * training_flops_per_image(model.config, tokenizer.token_space, num_scales=num_scales)
    assert measured < 2 * training_flops_per_image(model.config, tokenizer.token_space)


def test_compute_is_per_image_times_images_over_any_steps():
    """No per-step or per-batch overhead: 1 image, and two steps of 3 then 5 images, cost 1× and 8× one image."""
    tokenizer, model = build("debug", "debug")
    per_image = training_flops_per_image(model.config, tokenizer.token_space)
    assert measured_training_flops(tokenizer, model, [1]) == per_image
    assert measured_training_flops(tokenizer, model, [3, 5]) == 8 * per_image


def test_one_more_block_adds_one_blocks_cost():
    """depth d+1 − depth d, counted by torch on the whole model, equals torch's count of one block alone (forward
    and backward with gradients to its input and condition, as inside the model), and the formula's block cost."""
    batch = 2
    measured = {}
    for depth in (2, 3):
        tokenizer, model = build("debug", "debug", depth=depth)
        measured[depth] = measured_training_flops(tokenizer, model, [batch])
    config, space = model.config, tokenizer.token_space
    block = AdaLNBlock(
        width=config.width, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio, drop_path=0.0,
        l2_norm_attention=True, shared_adaln=False, norm_eps=config.norm_eps,
    )  # fmt: skip
    x_BLC = torch.randn(batch, space.schedule.total_length, config.width, requires_grad=True)
    cond_BD = torch.randn(batch, config.width, requires_grad=True)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        block(x_BLC, cond_BD, space.schedule.attention_mask()).sum().backward()
    one_block = matmul_flops(counter)
    assert measured[3] - measured[2] == one_block
    assert one_block == batch * block_training_flops_per_image(config, space)
    assert training_flops_per_image(var_preset("debug", depth=3), space) - training_flops_per_image(
        var_preset("debug", depth=2), space
    ) == block_training_flops_per_image(config, space)


def test_block_causal_counts_only_the_pairs_the_mask_keeps():
    tokenizer, model = build("debug", "debug")
    space, config = tokenizer.token_space, model.config
    kept = int(space.schedule.attention_mask().sum())
    assert attention_pairs(space, attention="block_causal") == kept == 1 * 1 + 4 * 5 + 9 * 14 + 16 * 30
    assert attention_pairs(space, attention="dense") == space.schedule.total_length**2
    dense = forward_flops_by_part(config, space)
    causal = forward_flops_by_part(config, space, attention="block_causal")
    assert {k: v for k, v in dense.items() if k != "attention"} == {k: v for k, v in causal.items() if k != "attention"}
    assert causal["attention"] * 900 == dense["attention"] * kept
    with pytest.raises(ValueError, match="attention must be one of"):
        training_flops_per_image(config, space, attention="causal")
    with pytest.raises(ValueError, match="num_scales"):
        training_flops_per_image(config, space, num_scales=5)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_inference_flops_equal_what_torch_counts_while_sampling(name):
    """The real sampler (KV cache, CFG's doubled batch) under FlopCounterMode."""
    tokenizer_name, var_name, overrides = CONFIGS[name]
    tokenizer, model = build(tokenizer_name, var_name, **overrides)
    model.eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        generate(model, tokenizer, [1, 2, 3], seed=0)
    counted = 3 * inference_flops_per_image(model.config, tokenizer.token_space)
    assert counted == matmul_flops(counter)
    # without guidance the blocks and head see one row per image instead of two
    single = inference_flops_per_image(model.config, tokenizer.token_space, classifier_free_guidance=False)
    assert counted / 3 / 2 < single < counted / 3


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_equals_the_built_model(name):
    tokenizer_name, var_name, overrides = CONFIGS[name]
    tokenizer, model = build(tokenizer_name, var_name, **overrides)
    space = tokenizer.token_space
    assert parameter_count(model.config, space) == sum(p.numel() for p in model.parameters())
    tables = [model.class_embed.weight, model.start_pos, model.pos_embed, model.level_embed.weight]
    assert embedding_parameters(model.config, space) == sum(t.numel() for t in tables)
    assert parameter_count(model.config, space, include_embeddings=False) == parameter_count(model.config, space) - sum(
        t.numel() for t in tables
    )


def test_parameter_counts_of_the_released_sizes_match_the_paper():
    """The paper's N: d16 310M, d20 600M, d24 1.0B, d30 2.0B (with the released tokenizer and 1000 classes)."""
    space = tokenizer_preset("vqvae-f16-c160").token_space
    millions = {d: parameter_count(var_preset(f"var-d{d}"), space) / 1e6 for d in (16, 20, 24, 30)}
    assert round(millions[16]) == 310 and round(millions[20], -1) == 600
    assert round(millions[24], -2) == 1000 and round(millions[30], -2) == 2000


@pytest.mark.parametrize("preset", ["debug", "fmnist-tiny"])
def test_the_raster_baselines_costs_equal_what_torch_counts_and_holds(preset):
    """The next-token baseline's training FLOPs (FlopCounterMode over its training loss, forward and backward) and
    its parameters, as `nextscale.model.cost` counts them without building it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from nextscale.model.cost import parameters, raster_training_flops_per_image, training_flops
    from nextscale.model.raster import RasterTransformer, raster_preset
    from nextscale.token_space import TokenSpace
    from nextscale.train.var_task import next_token_loss

    space = TokenSpace(512, 16, (8,))
    config = raster_preset(preset, depth=3, attention_scale=0.125)
    model = RasterTransformer(config, space).train()
    tokens = [torch.randint(512, (2, 8, 8))]
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        loss, _ = next_token_loss(model, tokens, torch.tensor([1, 2]))
        loss.backward()
    assert (
        counter.get_total_flops()
        == 2 * raster_training_flops_per_image(config, space)
        == 2 * training_flops(config, space)
    )
    assert parameters(config, space) == sum(p.numel() for p in model.parameters())
