"""Official checkpoints ↔ this library: the released layouts load strictly, configs are inferred, names map both
ways, and bad files fail with errors that name the problem.

The key tables (../shared/reference/keys) list every tensor of the released files with its shape. State dicts are
built from them with random values (the tokenizer and d16 as real tensors, every depth also on the meta device).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from nextscale.convert import (
    TOKENIZER_DERIVED,
    TOKENIZER_NAMES,
    VAR_DERIVED,
    VAR_NAMES,
    load_official,
    load_official_tokenizer,
    rename,
    to_official_tokenizer,
    to_official_var,
    token_space_from_official_var,
    tokenizer_config_from_official,
    tokenizer_from_official,
    var_config_from_official,
    var_from_official,
)
from nextscale.model.config import var_preset
from nextscale.model.var import VAR
from nextscale.scales import SCHEDULES
from nextscale.tokenizer.tokenizer import Tokenizer, TokenizerConfig, tokenizer_preset
from nextscale.weights import CheckpointError, load_strict, read_state_dict

# the token space of each released transformer: the released tokenizer with the 256-px (d36: 512-px) schedule
RELEASED_SPACE = {
    depth: tokenizer_preset("vqvae-f16-c160-512" if depth == 36 else "vqvae-f16-c160").token_space
    for depth in (16, 20, 24, 30, 36)
}

# instantiated parameter counts of the released models (reference §1.6 and §2.4, keys/counts.json)
TOKENIZER_PARAMS = 108_948_355
VAR_PARAMS = {16: 310_283_520, 20: 600_917_136, 24: 1_033_399_360, 30: 2_010_020_356, 36: 2_353_893_904}
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def read_table(folder, name: str) -> list[tuple[str, tuple[int, ...], str, str]]:
    """Rows of a key table: (official name, shape, dtype, 'param' | 'buffer')."""
    rows = []
    for line in (folder / name).read_text().splitlines():
        key, shape, dtype, kind = line.split("\t")
        rows.append((key, tuple(ast.literal_eval(shape)), dtype, kind))
    return rows


def official_buffers(patch_nums) -> dict[str, torch.Tensor]:
    """lvl_1L and attn_bias_for_masking as the official model holds them (written out here, not taken from the
    library): the scale of each token, and 0 where the query's scale ≥ the key's, −inf elsewhere."""
    level_L = torch.cat([torch.full((p * p,), k, dtype=torch.int64) for k, p in enumerate(patch_nums)])
    bias_LL = torch.zeros(len(level_L), len(level_L)).masked_fill_(level_L[:, None] < level_L[None, :], float("-inf"))
    return {"lvl_1L": level_L[None], "attn_bias_for_masking": bias_LL[None, None]}


def state_from_table(rows, patch_nums=None, device: str = "cpu", seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    fixed = official_buffers(patch_nums) if patch_nums else {}
    state = {}
    for key, shape, dtype, _ in rows:
        if key in fixed:
            state[key] = fixed[key]
        elif key.endswith("zero_k_bias"):
            state[key] = torch.zeros(shape)
        elif device == "meta":
            state[key] = torch.empty(shape, dtype=DTYPES[dtype], device="meta")
        else:
            state[key] = torch.empty(shape, dtype=DTYPES[dtype]).normal_(generator=generator)
    return state


def shapes(state: dict) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def count(module: torch.nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.startswith(prefix))


# ---- the released layouts -----------------------------------------------------------------------------------------


def test_released_tokenizer_layout_loads_strictly_and_round_trips(key_tables):
    rows = read_table(key_tables, "vqvae_keys.tsv")
    assert len(rows) == 324
    state = state_from_table(rows)
    tokenizer = tokenizer_from_official(state)
    assert tokenizer.config == tokenizer_preset("vqvae-f16-c160")
    expected = json.loads((key_tables / "counts.json").read_text())["vqvae"]
    assert count(tokenizer) == expected["params"] == TOKENIZER_PARAMS
    assert count(tokenizer, "encoder.") == expected["enc"]
    assert count(tokenizer, "decoder.") == expected["dec"]
    assert count(tokenizer, "quantizer.") == expected["quant"]
    assert count(tokenizer, "quant_conv.") + count(tokenizer, "post_quant_conv.") == expected["quant_conv"]

    back = to_official_tokenizer(tokenizer)
    assert shapes(back) == {key: shape for key, shape, _, _ in rows}
    assert all(back[key].dtype == DTYPES[dtype] for key, _, dtype, _ in rows)
    for key in state:
        if key not in TOKENIZER_DERIVED:
            assert torch.equal(back[key], state[key]), key
    ours = rename(back, TOKENIZER_NAMES, TOKENIZER_DERIVED)
    own = tokenizer.state_dict()
    assert ours.keys() == own.keys() and all(torch.equal(ours[k], own[k]) for k in own)


def test_released_d16_layout_loads_strictly_and_round_trips(key_tables):
    """Real random tensors (1.2 GB) through the whole loader, including the checks of the saved buffers."""
    rows = read_table(key_tables, "var_d16_keys.tsv")
    assert len(rows) == 220
    state = state_from_table(rows, SCHEDULES["256"])
    model = var_from_official(state, RELEASED_SPACE[16])
    assert model.config == var_preset("var-d16") and model.token_space == RELEASED_SPACE[16]
    assert count(model) == VAR_PARAMS[16]
    back = to_official_var(model)
    assert shapes(back) == {key: shape for key, shape, _, _ in rows}
    for key, _, dtype, _ in rows:
        assert back[key].dtype == DTYPES[dtype] and torch.equal(back[key], state[key]), key
    ours = rename(back, VAR_NAMES, VAR_DERIVED)
    own = model.state_dict()
    assert ours.keys() == own.keys() and all(torch.equal(ours[k], own[k]) for k in own)


@pytest.mark.parametrize("depth", [16, 20, 24, 30, 36])
def test_released_transformer_layouts_on_the_meta_device(key_tables, depth):
    """Every released size: the config inferred from the tensors is the preset (d36: the 512-px schedule and shared
    AdaLN), the strict load finds nothing missing or unexpected, the counts match, and our model exports exactly
    the table's names and shapes."""
    rows = read_table(key_tables, f"var_d{depth}_keys.tsv")
    preset, space = var_preset(f"var-d{depth}"), RELEASED_SPACE[depth]
    state = state_from_table(rows, space.patch_nums, device="meta")
    assert var_config_from_official(state) == preset
    assert token_space_from_official_var(state) == space
    without_buffers = {k: v for k, v in state.items() if k not in ("lvl_1L", "attn_bias_for_masking")}
    assert token_space_from_official_var(without_buffers) == space  # schedule from the position table (680 / 2240)

    with torch.device("meta"):
        model = VAR(var_config_from_official(state), space)
    load_strict(model, rename(state, VAR_NAMES, VAR_DERIVED), f"var-d{depth}")
    expected = json.loads((key_tables / "counts.json").read_text())[f"d{depth}"]
    assert count(model) == expected["params"] == VAR_PARAMS[depth]
    assert (model.config.width, model.config.num_heads) == (expected["width"], expected["heads"])
    assert model.config.drop_path_rate == pytest.approx(expected["dpr"])

    model.level_L = model.schedule.level_ids()  # the derived buffers, built for real to export them
    model.attn_mask_LL = model.schedule.attention_mask()
    back = to_official_var(model)
    assert shapes(back) == {key: shape for key, shape, _, _ in rows}
    buffers = [key for key, _, _, kind in rows if kind == "buffer"]
    assert sum(back[key].numel() for key in buffers) == expected["buffers_numel"]
    assert torch.equal(back["lvl_1L"], state["lvl_1L"])
    assert torch.equal(back["attn_bias_for_masking"], state["attn_bias_for_masking"])


def test_preset_parameter_counts_equal_the_released_models():
    for depth, params in VAR_PARAMS.items():
        with torch.device("meta"):
            assert count(VAR(var_preset(f"var-d{depth}"), RELEASED_SPACE[depth])) == params, depth
    with torch.device("meta"):
        assert count(Tokenizer(tokenizer_preset("vqvae-f16-c160"))) == TOKENIZER_PARAMS


# ---- the fixtures' files and the φ layouts --------------------------------------------------------------------------


def test_fixture_files_export_back_unchanged(parity):
    """load then export gives the official file back: every key, shape and value, buffers included."""
    for path, exported in (
        (parity.var_path, to_official_var(parity.model)),
        (parity.vae_path, to_official_tokenizer(parity.tokenizer)),
    ):
        original = read_state_dict(path)
        assert exported.keys() == original.keys(), path.name
        for key, value in original.items():
            assert torch.equal(exported[key], value), f"{path.name}: {key}"


@pytest.mark.parametrize(
    ("num_phis", "form"),
    [
        (0, "quantize.quant_resi.3.weight"),
        (1, "quantize.quant_resi.qresi.weight"),
        (4, "quantize.quant_resi.qresi_ls.3.weight"),
    ],
)
def test_phi_layouts_round_trip(num_phis, form):
    """One φ per scale, one shared φ, partially shared φ: each has its own official key form."""
    config = TokenizerConfig(
        vocab_size=16,
        latent_channels=4,
        base_channels=32,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        patch_nums=(1, 2, 3, 4),
        num_phis=num_phis,
    )
    torch.manual_seed(0)
    tokenizer = Tokenizer(config)
    state = to_official_tokenizer(tokenizer)
    assert form in state
    assert sum(k.startswith("quantize.quant_resi.") for k in state) == 2 * (num_phis or 4)
    assert tokenizer_config_from_official(state, config.patch_nums) == config
    loaded = tokenizer_from_official(state, config.patch_nums)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in tokenizer.state_dict().items())


# ---- bad files ----------------------------------------------------------------------------------------------------


@pytest.fixture
def var_state(tiny_a) -> dict[str, torch.Tensor]:
    return read_state_dict(tiny_a.var_path)


def save(tmp_path, obj, name: str = "var.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def test_missing_key_is_named(tmp_path, tiny_a, var_state):
    del var_state["head.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys: head\.bias"):
        load_official(tiny_a.vae_path, save(tmp_path, var_state))


def test_unexpected_key_is_named(tmp_path, tiny_a, var_state):
    var_state["blocks.0.attn.extra_bias"] = torch.zeros(64)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*blocks\.0\.attn\.extra_bias"):
        load_official(tiny_a.vae_path, save(tmp_path, var_state))


def test_shape_mismatch_names_both_shapes(tmp_path, tiny_a, var_state):
    var_state["blocks.1.ffn.fc1.bias"] = torch.zeros(255)
    with pytest.raises(CheckpointError, match=r"blocks\.1\.mlp\.fc1\.bias: checkpoint \(255,\) vs model \(256,\)"):
        load_official(tiny_a.vae_path, save(tmp_path, var_state))


@pytest.mark.parametrize("obj", [[1, 2, 3], {"weight": 1.0}, torch.zeros(3), {}])
def test_objects_that_are_not_state_dicts(tmp_path, obj):
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        read_state_dict(save(tmp_path, obj))


CODE_RAN = []


def _side_effect():
    CODE_RAN.append(True)
    return {}


class NeedsCode:
    def __reduce__(self):
        return (_side_effect, ())


def test_a_pickle_that_needs_code_is_refused_without_running_it(tmp_path):
    path = save(tmp_path, {"model": NeedsCode()})
    with pytest.raises(CheckpointError, match="not a plain weights file .*_side_effect.*not loaded") as caught:
        read_state_dict(path)
    assert not CODE_RAN
    assert "weights_only" not in str(caught.value)  # not torch's advice to load it unsafely


def test_unreadable_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="could not be read"):
        read_state_dict(garbage)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official(tmp_path / "vae.pth", tmp_path / "nope.pth")


def test_tokenizer_file_given_as_the_transformer(tiny_a):
    with pytest.raises(CheckpointError, match="is a tokenizer checkpoint"):
        load_official(tiny_a.vae_path, tiny_a.vae_path)


def test_tokenizer_that_does_not_fit_the_transformer(tmp_path, tiny_a):
    vae_state = read_state_dict(tiny_a.vae_path)
    vae_state["quantize.embedding.weight"] = torch.zeros(32, 8)
    vae_state["quantize.ema_vocab_hit_SV"] = torch.zeros(4, 32)
    with pytest.raises(CheckpointError, match="does not fit.*built for another tokenizer.*vocabulary 64"):
        load_official(save(tmp_path, vae_state, "vae.pth"), tiny_a.var_path)


def test_saved_buffers_must_agree_with_the_schedule(var_state):
    shuffled = dict(var_state, lvl_1L=var_state["lvl_1L"].flip(-1))  # same counts per scale, wrong order
    space = token_space_from_official_var(var_state)
    with pytest.raises(CheckpointError, match="level ids"):
        var_from_official(shuffled, space)
    open_mask = dict(var_state, attn_bias_for_masking=torch.zeros_like(var_state["attn_bias_for_masking"]))
    with pytest.raises(CheckpointError, match="attention mask"):
        var_from_official(open_mask, space)


def test_head_count_must_agree_with_the_checkpoint(var_state):
    with pytest.raises(CheckpointError, match="num_heads=4 given, but the checkpoint has 2 heads"):
        var_from_official(var_state, token_space_from_official_var(var_state), num_heads=4)


def test_official_trainer_checkpoints_are_unwrapped(tmp_path, var_state):
    path = save(tmp_path, {"epoch": 3, "trainer": {"var_wo_ddp": var_state, "config": {}}}, "ar-ckpt-last.pth")
    loaded = read_state_dict(path)
    assert loaded.keys() == var_state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in var_state.items())


def test_model_names_download_from_the_hub_and_load(tmp_path, monkeypatch):
    """`load_official("vqvae", "var-d16")` asks huggingface_hub for the released file names; the files it returns
    are read as any local checkpoint (here the tiny_a fixture stands in for the downloaded files)."""
    hub = pytest.importorskip("huggingface_hub")
    assets = Path(__file__).resolve().parent / "assets"
    asked = []

    def fake_download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        return str(assets / ("tiny_a_vae.pth" if filename.startswith("vae") else "tiny_a_var.pth"))

    monkeypatch.setattr(hub, "hf_hub_download", fake_download)
    monkeypatch.chdir(tmp_path)  # no local files named like the models
    tokenizer, model = load_official("vqvae", "var-d16")
    assert asked == [("FoundationVision/var", "var_d16.pth"), ("FoundationVision/var", "vae_ch160v4096z32.pth")]
    assert model.config.depth == 2 and tokenizer.vocab_size == 64


def test_offline_download_gives_a_clear_message(tmp_path, monkeypatch):
    hub = pytest.importorskip("huggingface_hub")

    def offline(repo_id, filename, **kwargs):
        raise OSError("We couldn't connect to the Hub")

    monkeypatch.setattr(hub, "hf_hub_download", offline)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"could not download var_d30\.pth from FoundationVision/var"):
        load_official("vqvae", "var-d30")


def test_without_huggingface_hub_a_model_name_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"pip install 'nextscale\[hub\]'"):
        load_official("vqvae", "var-d16")


def test_the_official_tokenizer_alone_with_a_schedule(tiny_a, tiny_e):
    """`nextscale convert`'s loader: the tokenizer file with the schedule a transformer needs; a transformer file in
    its place is named as such."""
    tokenizer = load_official_tokenizer(tiny_a.vae_path, (1, 2, 3, 4))
    assert tokenizer.token_space == tiny_a.model.token_space
    assert load_official_tokenizer(tiny_e.vae_path).token_space == tiny_e.model.token_space  # 10 scales: the 256 one
    with pytest.raises(CheckpointError, match="is a transformer checkpoint"):
        load_official_tokenizer(tiny_a.var_path)
