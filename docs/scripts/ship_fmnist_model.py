"""Write the Fashion-MNIST model that ships inside the package (`nextscale sample --model fmnist`): a trained
tokenizer and transformer, their weights stored in fp16 to halve the wheel (they load back into fp32 modules). The
evaluation recorded in its nextscale.json is the fp32 source model's; the fp16-rounded weights draw the same tokens
almost everywhere (12,996 of 13,000 for 100 images of the FID setting, seed 0).

    python docs/scripts/ship_fmnist_model.py --model runs/ablation/runs/var-large/seed0/model \
        --evaluation docs/data/evaluation/fmnist --description "fmnist-small, 7.4M parameters, 2 epochs" \
        --command "nextscale ablation … (its var-large model, seed 0)" --out nextscale/assets/fmnist

--evaluation is the folder docs/scripts/fmnist_model_eval.py wrote: its chosen preset becomes the model's default
sampling settings ("sampling" in nextscale.json, what `nextscale sample --model` and `Pipeline.from_pretrained` use),
and its figures (2,000 samples at seeds 0/1/2, 10,000 samples) are recorded under "shipped".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from nextscale.pretrained import from_pretrained, read_metadata, save_pretrained


def rounded_to_fp16(module: torch.nn.Module) -> torch.nn.Module:
    """The module with its floating-point parameters and buffers stored in fp16 (integers untouched)."""
    return module.to(torch.float16)


KEYS = ("fid", "inception_score", "kid", "precision", "recall", "class_accuracy")


def evaluation(folder: Path) -> dict:
    """The figures of the chosen preset: per sampling seed (2,000 samples), their mean and sd, and 10,000 samples."""
    seeds = {
        int(p.stem.removeprefix("preset-seed")): json.loads(p.read_text()) for p in folder.glob("preset-seed*.json")
    }
    summary = {}
    for key in KEYS:
        values = np.array([seeds[s][key] for s in sorted(seeds)], dtype=np.float64)
        summary[key] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    ten_k = json.loads((folder / "preset-10k.json").read_text())
    return {
        "settings": json.loads((folder / "preset.json").read_text())["settings"],
        "samples_2k": {"seeds": sorted(seeds), **summary},
        "samples_10k": {key: ten_k[key] for key in KEYS},
        "source": str(folder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="trained model directory holding tokenizer/ and transformer/")
    parser.add_argument("--evaluation", type=Path, help="folder of fmnist_model_eval.py's JSON files")
    parser.add_argument("--description", default="", help="what the demo and the metadata call the model")
    parser.add_argument("--command", default="", help="the command that trained the transformer, for the record")
    parser.add_argument("--out", default="nextscale/assets/fmnist")
    args = parser.parse_args()

    tokenizer, model = from_pretrained(args.model)
    if tokenizer is None or model is None:
        raise SystemExit(f"{args.model} must hold both tokenizer/ and transformer/")
    metadata = read_metadata(args.model)
    metadata["shipped"] = {
        "source": str(args.model),
        "description": args.description,
        "weights_dtype": "float16",
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_with": args.command,
        "evaluation": evaluation(args.evaluation) if args.evaluation else None,
    }
    if args.evaluation:
        metadata["sampling"] = json.loads((args.evaluation / "preset.json").read_text())["settings"]
    out = save_pretrained(args.out, rounded_to_fp16(tokenizer), rounded_to_fp16(model), metadata)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
