"""`nextscale eval-samples` (FID, IS, KID, precision/recall, class accuracy of a sample set) and `train-classifier`
(the Fashion-MNIST classifier whose weights nextscale ships). Options are generated from `EvaluationConfig` and
`ClassifierTrainingConfig`, so flags and fields cannot drift apart."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from nextscale.cli.common import DEVICE_HELP, UsageError, add_command, check_device
from nextscale.cli.options import add_config_options, build_config, given, to_argv

_EVAL_RENAMES = {"use_cache": "--cache", "data_root": "--data-root"}
_TRAIN_RENAMES = {"root": "--data-root"}


def add_commands(commands) -> None:
    from nextscale.eval.config import (
        BUILTIN_REFERENCES,
        FEATURE_NETWORKS,
        ClassifierConfig,
        ClassifierTrainingConfig,
        EvaluationConfig,
    )

    p = add_command(commands, "eval-samples", cmd_eval_samples)
    add_config_options(
        p,
        EvaluationConfig,
        renames=_EVAL_RENAMES,
        choices={"features": FEATURE_NETWORKS},
        helps={
            "samples": "folder of images (sample-set output; class ids from the file names), .npz (arr_0, labels), "
            "or fashion-mnist:train|test (real images: the floor)",
            "reference": f"{' | '.join(BUILTIN_REFERENCES)} | a folder of images | an .npz",
            "features": "feature network: the shipped Fashion-MNIST classifier or InceptionV3",
            "inception_weights": "local InceptionV3 weights (torch-fidelity's .pth state dict) instead of downloading",
            "classifier_weights": "Fashion-MNIST classifier weights (.safetensors from train-classifier) instead of "
            "the shipped ones",
            "data_root": "folder of the Fashion-MNIST IDX files (default: /usr/share/datasets/fashion-mnist)",
            "cache_dir": "where reference features are cached (default: $NEXTSCALE_CACHE_DIR or ~/.cache/nextscale)",
            "use_cache": "reuse cached reference features (--no-cache recomputes and writes nothing)",
            "batch_size": "images per feature-network call",
            "device": DEVICE_HELP,
        },
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = add_command(commands, "train-classifier", cmd_train_classifier)
    recipe = p.add_argument_group("recipe")
    add_config_options(recipe, ClassifierTrainingConfig, exclude=("model",), renames=_TRAIN_RENAMES)
    add_config_options(p.add_argument_group("network"), ClassifierConfig, exclude=("num_classes",))
    p.add_argument(
        "--out",
        default="runs/classifier/fmnist_classifier.safetensors",
        help="weights file; the recipe and test accuracy go to the .json beside it",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_json_output(path: str | None) -> None:
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--json {target}: a folder is in the way (name a file)")
    parent = next((folder for folder in target.resolve().parents if folder.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"--json {target}: {parent} is a file, not a folder")


def cmd_eval_samples(args) -> None:
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples, format_table

    if args.samples is None:
        raise UsageError("--samples is required (a folder of images or an .npz)")
    _check_json_output(args.json)
    config = build_config(EvaluationConfig, args, {"device": check_device(args.device)})
    try:
        result = evaluate_samples(config, progress=not args.no_progress)
    except ImportError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    print(format_table(result))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


def _training_command(args) -> str:
    """The command line that remakes this run: the flags that were given, then --out."""
    from nextscale.eval.config import ClassifierConfig, ClassifierTrainingConfig

    values = {**given(args, ClassifierTrainingConfig, exclude=("model",)), **given(args, ClassifierConfig)}
    return shlex.join(["nextscale", "train-classifier", *to_argv(values, _TRAIN_RENAMES), "--out", args.out])


def cmd_train_classifier(args) -> None:
    from nextscale.eval.classifier import ClassifierConfig, save_classifier
    from nextscale.eval.classifier_training import ClassifierTrainingConfig, train_classifier

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: name a .safetensors file")
    if out.is_dir():
        raise UsageError(f"--out {out}: a folder is in the way (name a file)")
    network = build_config(ClassifierConfig, args)
    config = build_config(ClassifierTrainingConfig, args, model=network)
    model, record = train_classifier(config, progress=not args.no_progress)
    record["command"] = _training_command(args)
    path = save_classifier(model, out, record)
    accuracy = record[f"test_accuracy_{config.image_size}px"]
    print(f"test accuracy {100 * accuracy:.2f}% on 10,000 images; wrote {path} and {path.with_suffix('.json')}")
