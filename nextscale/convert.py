"""Official VAR checkpoints ↔ this library: the one place that knows the official parameter names.

`load_official(vae_path, var_path)` reads the released `vae_ch160v4096z32.pth` and `var_d{16,20,24,30,36}.pth` (or
any checkpoint in their format), infers every hyperparameter the tensors determine, renames with the tables below and
loads strictly. `to_official_*` go the other way, so the tables are tested in both directions.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from pathlib import Path

import torch

from nextscale.model.config import VARConfig
from nextscale.model.var import VAR
from nextscale.scales import SCHEDULES, ScaleSchedule, parse_patch_nums
from nextscale.token_space import TokenSpace, require_same_token_space
from nextscale.tokenizer.tokenizer import Tokenizer, TokenizerConfig
from nextscale.weights import CheckpointError, load_strict, read_state_dict

logger = logging.getLogger(__name__)

HF_REPO = "FoundationVision/var"
HF_TOKENIZER_FILE = "vae_ch160v4096z32.pth"
HF_MODEL_FILES = {f"var-d{d}": f"var_d{d}.pth" for d in (16, 20, 24, 30, 36)}

# (official name, this library's name) templates. Placeholders: {i} a block/level index, {p} weight or bias,
# {rest} any dotted tail. Each table is read in both directions.
TOKENIZER_NAMES: list[tuple[str, str]] = [
    ("quantize.embedding.weight", "quantizer.codebook.weight"),
    ("quantize.quant_resi.qresi_ls.{i}.{p}", "quantizer.phis.{i}.conv.{p}"),  # n partially shared φ
    ("quantize.quant_resi.qresi.{p}", "quantizer.phis.0.conv.{p}"),  # one shared φ
    ("quantize.quant_resi.{i}.{p}", "quantizer.phis.{i}.conv.{p}"),  # one φ per scale
    ("encoder.{rest}", "encoder.{rest}"),  # the latent-diffusion conv layout keeps its names
    ("decoder.{rest}", "decoder.{rest}"),
    ("quant_conv.{p}", "quant_conv.{p}"),
    ("post_quant_conv.{p}", "post_quant_conv.{p}"),
]
TOKENIZER_DERIVED = ["quantize.ema_vocab_hit_SV"]  # code-usage statistics of the official trainer, not weights

VAR_NAMES: list[tuple[str, str]] = [
    ("pos_start", "start_pos"),
    ("pos_1LC", "pos_embed"),
    ("word_embed.{p}", "token_embed.{p}"),
    ("class_emb.weight", "class_embed.weight"),
    ("lvl_embed.weight", "level_embed.weight"),
    ("shared_ada_lin.1.{p}", "shared_adaln.linear.{p}"),
    ("blocks.{i}.ada_gss", "blocks.{i}.adaln_bias"),
    ("blocks.{i}.ada_lin.1.{p}", "blocks.{i}.adaln.linear.{p}"),
    ("blocks.{i}.attn.scale_mul_1H11", "blocks.{i}.attn.logit_scale"),
    ("blocks.{i}.attn.q_bias", "blocks.{i}.attn.q_bias"),
    ("blocks.{i}.attn.v_bias", "blocks.{i}.attn.v_bias"),
    ("blocks.{i}.attn.mat_qkv.weight", "blocks.{i}.attn.qkv.weight"),
    ("blocks.{i}.attn.proj.{p}", "blocks.{i}.attn.proj.{p}"),
    ("blocks.{i}.ffn.fc1.{p}", "blocks.{i}.mlp.fc1.{p}"),
    ("blocks.{i}.ffn.fc2.{p}", "blocks.{i}.mlp.fc2.{p}"),
    ("head_nm.ada_lin.1.{p}", "head_adaln.linear.{p}"),
    ("head.{p}", "head.{p}"),
]
# buffers the official model saves although they follow from the config; rebuilt here, checked on load
VAR_DERIVED = ["lvl_1L", "attn_bias_for_masking", "blocks.{i}.attn.zero_k_bias"]

_PLACEHOLDERS = {"i": r"\d+", "p": r"weight|bias", "rest": r".+"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    regex = "".join(
        re.escape(part) if n % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})" for n, part in enumerate(parts)
    )
    return re.compile(regex + r"\Z")


def rename(state: dict, table: list[tuple[str, str]], derived: list[str] = (), reverse: bool = False) -> dict:
    """Rename keys official → ours with `table` (ours → official with `reverse`), dropping `derived` keys.
    Raises CheckpointError listing every key that no rule covers."""
    rules = [(_compile(ours), official) if reverse else (_compile(official), ours) for official, ours in table]
    skip = [_compile(t) for t in derived]
    out, unknown = {}, []
    for key, value in state.items():
        if any(p.match(key) for p in skip):
            continue
        for pattern, target in rules:
            match = pattern.match(key)
            if match:
                out[target.format(**match.groupdict())] = value
                break
        else:
            unknown.append(key)
    if unknown:
        more = f" … and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise CheckpointError(f"unexpected keys (no rule maps them): {', '.join(unknown[:10])}{more}")
    return out


# ---- inferring configs ----------------------------------------------------------------------------------------------


def _require(state: dict, key: str, what: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"{what} checkpoint has no '{key}': is this the right file?")
    return state[key]


def tokenizer_config_from_official(state: dict, patch_nums: tuple[int, ...] | None = None) -> TokenizerConfig:
    codebook = _require(state, "quantize.embedding.weight", "tokenizer")
    conv_in = _require(state, "encoder.conv_in.weight", "tokenizer")
    base = conv_in.shape[0]
    levels = sorted({int(m.group(1)) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    multipliers = tuple(state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // base for i in levels)
    num_blocks = len({m.group(1) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    last = levels[-1]
    phi_keys = [k for k in state if k.startswith("quantize.quant_resi.") and k.endswith(".weight")]
    if any(".qresi_ls." in k for k in phi_keys) or any(re.match(r"quantize\.quant_resi\.\d+\.", k) for k in phi_keys):
        count = len(phi_keys)
    else:
        count = 1
    hits = state.get("quantize.ema_vocab_hit_SV")
    if patch_nums is None:
        num_scales = hits.shape[0] if hits is not None else 10
        patch_nums = SCHEDULES["256"] if num_scales == 10 else None
        if patch_nums is None:
            raise CheckpointError(f"cannot infer the {num_scales}-scale schedule: pass patch_nums")
    non_shared = any(re.match(r"quantize\.quant_resi\.\d+\.", k) for k in phi_keys)
    return TokenizerConfig(
        vocab_size=codebook.shape[0],
        latent_channels=codebook.shape[1],
        base_channels=base,
        channel_multipliers=multipliers,
        num_res_blocks=num_blocks,
        use_attention=any(k.startswith(f"encoder.down.{last}.attn.") for k in state),
        use_mid_attention="encoder.mid.attn_1.qkv.weight" in state,
        image_channels=conv_in.shape[1],
        patch_nums=tuple(patch_nums),
        num_phis=0 if non_shared and count == len(patch_nums) else count,
        phi_residual_ratio=0.5 if phi_keys else 0.0,
        quant_conv_kernel=_require(state, "quant_conv.weight", "tokenizer").shape[-1],
    )


def patch_nums_from_official(state: dict) -> tuple[int, ...]:
    """The schedule follows from the saved level ids (tokens per scale = pn²), else from the sequence length."""
    if "lvl_1L" in state:
        counts = Counter(state["lvl_1L"].flatten().tolist())
        sides = [round(counts[k] ** 0.5) for k in sorted(counts)]
        if all(s * s == counts[k] for s, k in zip(sides, sorted(counts))):
            return tuple(sides)
    length = _require(state, "pos_1LC", "transformer").shape[1]
    for sides in SCHEDULES.values():
        if ScaleSchedule(sides).total_length == length:
            return sides
    raise CheckpointError(f"cannot infer the scale schedule of a {length}-token model: pass patch_nums")


def token_space_from_official_var(state: dict, patch_nums: tuple[int, ...] | None = None) -> TokenSpace:
    """The token space a transformer checkpoint was trained on: vocabulary from the head, latent channels from the
    input embedding, schedule from the saved level ids (or `patch_nums`)."""
    return TokenSpace(
        vocab_size=_require(state, "head.weight", "transformer").shape[0],
        latent_channels=_require(state, "word_embed.weight", "transformer").shape[1],
        patch_nums=tuple(patch_nums) if patch_nums is not None else patch_nums_from_official(state),
    )


def var_config_from_official(state: dict, num_heads: int | None = None) -> VARConfig:
    width = _require(state, "pos_start", "transformer").shape[-1]
    depth = len({m.group(1) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    scale_mul = state.get("blocks.0.attn.scale_mul_1H11")
    if scale_mul is not None:
        heads = scale_mul.shape[1]
        if num_heads is not None and num_heads != heads:
            raise CheckpointError(f"num_heads={num_heads} given, but the checkpoint has {heads} heads")
    else:
        heads = num_heads if num_heads is not None else max(width // 64, 1)
    return VARConfig(
        depth=depth,
        width=width,
        num_heads=heads,
        num_classes=_require(state, "class_emb.weight", "transformer").shape[0] - 1,
        mlp_ratio=_require(state, "blocks.0.ffn.fc1.weight", "transformer").shape[0] / width,
        shared_adaln="shared_ada_lin.1.weight" in state,
        l2_norm_attention=scale_mul is not None,
    )


# ---- both directions ------------------------------------------------------------------------------------------------


def tokenizer_from_official(state: dict, patch_nums=None, device="cpu") -> Tokenizer:
    config = tokenizer_config_from_official(state, patch_nums)
    with torch.device("meta"):
        tokenizer = Tokenizer(config)
    load_strict(tokenizer, rename(state, TOKENIZER_NAMES, TOKENIZER_DERIVED), "tokenizer checkpoint")
    return tokenizer.to(device).eval().requires_grad_(False)


def var_from_official(state: dict, token_space: TokenSpace, num_heads=None, device="cpu") -> VAR:
    """A transformer checkpoint → VAR for `token_space` (the tokenizer's; it must be the one the checkpoint was
    trained on)."""
    require_same_token_space(token_space, token_space_from_official_var(state, token_space.patch_nums))
    config = var_config_from_official(state, num_heads)
    with torch.device("meta"):
        model = VAR(config, token_space)
    ours = rename(state, VAR_NAMES, VAR_DERIVED)
    load_strict(model, ours, "transformer checkpoint")
    _rebuild_buffers(model, state["pos_1LC"].device)
    _check_derived(model, state)
    return model.to(device).eval()


def _rebuild_buffers(model: VAR, device: torch.device) -> None:
    """Buffers are not in the state dict (derived); after a meta-device build they must be recomputed."""
    model.level_L = model.schedule.level_ids(device)
    model.attn_mask_LL = model.schedule.attention_mask(device)


def _check_derived(model: VAR, state: dict) -> None:
    """The official file also stores level ids and the mask: they must agree with the schedule built here."""
    if "lvl_1L" in state and not torch.equal(state["lvl_1L"].flatten().cpu(), model.level_L.cpu()):
        raise CheckpointError("the checkpoint's level ids (lvl_1L) disagree with the scale schedule")
    bias = state.get("attn_bias_for_masking")
    if bias is not None and not torch.equal(torch.isfinite(bias[0, 0]).cpu(), model.attn_mask_LL.cpu()):
        raise CheckpointError("the checkpoint's attention mask disagrees with the block-causal schedule")


def to_official_tokenizer(tokenizer: Tokenizer) -> dict[str, torch.Tensor]:
    num_phis = tokenizer.config.num_phis
    phi_form = {0: "quant_resi.{i}.", 1: "quant_resi.qresi."}.get(num_phis, "quant_resi.qresi_ls.")
    table = [(off, ours) for off, ours in TOKENIZER_NAMES if "quant_resi" not in off or phi_form in off]
    state = rename(tokenizer.state_dict(), table, reverse=True)
    state["quantize.ema_vocab_hit_SV"] = torch.zeros(tokenizer.schedule.num_scales, tokenizer.vocab_size)
    return state


def to_official_var(model: VAR) -> dict[str, torch.Tensor]:
    state = rename(model.state_dict(), VAR_NAMES, reverse=True)
    L = model.schedule.total_length
    state["lvl_1L"] = model.level_L.view(1, L).clone()
    bias = torch.zeros(1, 1, L, L).masked_fill_(~model.attn_mask_LL.cpu(), float("-inf"))
    state["attn_bias_for_masking"] = bias
    for i in range(model.config.depth):
        state[f"blocks.{i}.attn.zero_k_bias"] = torch.zeros(model.config.width)
    return state


# ---- entry point ----------------------------------------------------------------------------------------------------


def _resolve(path_or_name: str | os.PathLike, filename: str | None) -> Path:
    path = Path(path_or_name)
    if path.exists() or filename is None:
        return path
    try:
        from huggingface_hub import hf_hub_download  # optional: the hub extra
    except ImportError:
        raise CheckpointError(
            f"{path_or_name!r} is not a file; downloading '{filename}' from the Hugging Face repo {HF_REPO} needs "
            "huggingface_hub (pip install 'nextscale[hub]')"
        ) from None
    try:
        return Path(hf_hub_download(HF_REPO, filename))
    except Exception as err:  # offline, missing repo, auth: the library's own exceptions vary by version
        raise CheckpointError(f"could not download {filename} from {HF_REPO}: {err}") from None


def load_official(
    vae_path: str | os.PathLike,
    var_path: str | os.PathLike,
    *,
    patch_nums: tuple[int, ...] | None = None,
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Tokenizer, VAR]:
    """Official tokenizer and transformer checkpoints → (Tokenizer, VAR), both in eval mode.

    Paths, or model names: `var_path="var-d16"` (… `"var-d36"`) and `vae_path="vqvae"` download the released files
    from the Hugging Face repo FoundationVision/var when huggingface_hub is installed and online."""
    var_file = _resolve(var_path, HF_MODEL_FILES.get(str(var_path)))
    var_state = read_state_dict(var_file)
    if "pos_1LC" not in var_state and "quantize.embedding.weight" in var_state:
        raise CheckpointError(f"{var_file} is a tokenizer checkpoint; the transformer checkpoint was expected there")
    patch_nums = tuple(patch_nums) if patch_nums is not None else patch_nums_from_official(var_state)
    tokenizer = load_official_tokenizer(vae_path, patch_nums, device)
    try:
        return tokenizer, var_from_official(var_state, tokenizer.token_space, num_heads, device)
    except CheckpointError:
        raise
    except ValueError as err:  # the two files belong to different models
        raise CheckpointError(f"{vae_path} does not fit {var_file}: {err}") from None


def load_official_tokenizer(
    vae_path: str | os.PathLike, patch_nums: tuple[int, ...] | str | None = None, device: str | torch.device = "cpu"
) -> Tokenizer:
    """An official tokenizer checkpoint (a path, or "vqvae" to download the released one) with a scale schedule:
    `patch_nums` such as "256" / "512" / (1, 2, 3, 4, …); by default the 256-px schedule for 10-scale files."""
    is_name = str(vae_path) in ("vqvae", "vae", HF_TOKENIZER_FILE)
    vae_file = _resolve(vae_path, HF_TOKENIZER_FILE if is_name else None)
    state = read_state_dict(vae_file)
    if "pos_1LC" in state:
        raise CheckpointError(f"{vae_file} is a transformer checkpoint; the tokenizer checkpoint was expected there")
    return tokenizer_from_official(state, None if patch_nums is None else parse_patch_nums(patch_nums), device)
