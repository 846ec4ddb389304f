"""save_pretrained / from_pretrained: exact round trips, atomic overwrite, strict and explained failures."""

import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file

from nextscale.pretrained import FORMAT_VERSION, from_pretrained, read_metadata, save_pretrained
from nextscale.sampling import generate
from nextscale.weights import CheckpointError


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_round_trip_is_exact(tmp_path, debug_models):
    tokenizer, model = debug_models
    path = save_pretrained(tmp_path / "model", tokenizer, model, metadata={"step": 12})
    loaded_tokenizer, loaded_model = from_pretrained(path)
    assert loaded_tokenizer.config == tokenizer.config and loaded_model.config == model.config
    assert_same_state(loaded_tokenizer, tokenizer)
    assert_same_state(loaded_model, model)
    assert not loaded_model.training and not loaded_tokenizer.training
    assert read_metadata(path) == {"format_version": FORMAT_VERSION, "step": 12}
    before = generate(model, tokenizer, [1, 2], cfg=2.0, top_k=8, seed=5)
    after = generate(loaded_model, loaded_tokenizer, [1, 2], cfg=2.0, top_k=8, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(before.token_maps, after.token_maps))
    assert torch.equal(before.images, after.images)


def test_round_trip_keeps_non_default_configs(tmp_path, make_debug_pair):
    tokenizer, model = make_debug_pair(
        tokenizer_overrides={"num_phis": 0, "use_znorm": True}, shared_adaln=True, l2_norm_attention=False
    )
    loaded_tokenizer, loaded_model = from_pretrained(save_pretrained(tmp_path / "m", tokenizer, model))
    assert loaded_tokenizer.config == tokenizer.config and loaded_model.config == model.config
    assert_same_state(loaded_model, model)


def test_saving_again_replaces_the_directory(tmp_path, make_debug_pair):
    first_tokenizer, first_model = make_debug_pair(seed=1)
    second_tokenizer, _ = make_debug_pair(seed=2)
    path = tmp_path / "model"
    save_pretrained(path, first_tokenizer, first_model)
    save_pretrained(path, second_tokenizer)  # tokenizer only: the old transformer must not survive
    loaded_tokenizer, loaded_model = from_pretrained(path)
    assert loaded_model is None
    assert_same_state(loaded_tokenizer, second_tokenizer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging or backup folders left


def test_missing_directory_and_files(tmp_path, debug_models):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        from_pretrained(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither tokenizer/ nor transformer/"):
        from_pretrained(tmp_path / "empty")
    path = save_pretrained(tmp_path / "model", *debug_models)
    (path / "transformer" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="weights file missing"):
        from_pretrained(path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, debug_models):
    path = save_pretrained(tmp_path / "model", *debug_models)
    weights = path / "transformer" / "model.safetensors"
    state = load_file(str(weights))
    state["head.bias"] = torch.zeros(63)
    del state["head.weight"]
    save_file(state, str(weights))
    with pytest.raises(CheckpointError, match=r"missing keys: head\.weight.*head\.bias: checkpoint \(63,\) vs model"):
        from_pretrained(path)


def test_unknown_config_fields_are_refused(tmp_path, debug_models):
    path = save_pretrained(tmp_path / "model", *debug_models)
    config_file = path / "tokenizer" / "config.json"
    config = json.loads(config_file.read_text())
    config["codebook_temperature"] = 2.0
    config_file.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="codebook_temperature"):
        from_pretrained(path)


def test_a_model_directory_records_its_default_sampling_settings(tmp_path, debug_models):
    """ "sampling" in nextscale.json is the model's default: Pipeline.from_pretrained and `nextscale sample-set --model`
    use it unless told otherwise; a damaged record is refused when the directory is read."""
    from nextscale import cli
    from nextscale.pipeline import Pipeline
    from nextscale.sampling import SamplingSettings

    tokenizer, model = debug_models
    recorded = {"cfg": 2.5, "top_k": 7, "top_p": 0.0, "more_smooth": False}
    save_pretrained(tmp_path / "m", tokenizer, model, metadata={"sampling": recorded})
    assert Pipeline.from_pretrained(tmp_path / "m").settings == SamplingSettings(**recorded)
    assert Pipeline.from_pretrained(tmp_path / "m", settings="fid").settings == SamplingSettings.preset("fid")
    out = tmp_path / "set"
    argv = ["sample-set", "--model", str(tmp_path / "m"), "--per-class", "1", "--classes", "0", "--out", str(out)]
    assert cli.main([*argv, "--no-progress"]) == 0
    assert json.loads((out / "settings.json").read_text())["sampling"] == {**asdict(SamplingSettings()), **recorded}
    assert cli.main([*argv, "--top-k", "3", "--no-progress", "--out", str(tmp_path / "set3")]) == 0  # flags on top
    assert json.loads((tmp_path / "set3" / "settings.json").read_text())["sampling"]["top_k"] == 3

    for damaged in ({"cfg": -1}, {"temperature": 2}, [1, 2]):
        save_pretrained(tmp_path / "bad", tokenizer, model, metadata={"sampling": damaged})
        with pytest.raises(CheckpointError, match="sampling"):
            Pipeline.from_pretrained(tmp_path / "bad")
