"""`nextscale sample`, `edit`, `sample-set`: images from a trained or released model."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from nextscale.cli.common import UsageError, _autocast, load_models, load_pipeline, sampling_kwargs


def cmd_sample(args) -> None:
    from nextscale.images import save_grid
    from nextscale.sampling import generate

    if args.per_class <= 0:
        raise UsageError(f"--per-class must be positive, got {args.per_class}")
    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    tokenizer, model, _ = load_models(args)
    classes = args.classes if args.classes else list(range(min(model.num_classes, 10)))
    for c in classes:
        if not 0 <= c < model.num_classes:
            raise UsageError(f"class {c} is outside [0, {model.num_classes})")
    labels = [c for c in classes for _ in range(args.per_class)]
    kwargs = sampling_kwargs(args)
    chunks = []
    for begin in range(0, len(labels), args.batch_size):
        batch = labels[begin : begin + args.batch_size]
        chunks.append(
            generate(model, tokenizer, batch, seed=args.seed + begin, autocast_dtype=_autocast(args), **kwargs).images
        )
    images = torch.cat(chunks)
    upscale = max(1, 128 // images.shape[-1])
    path = save_grid(images, args.out, columns=args.per_class if len(classes) > 1 else 8, upscale=upscale)
    print(f"wrote {len(labels)} samples ({len(classes)} classes × {args.per_class}) to {path}")


# ---- edit -----------------------------------------------------------------------------------------------------------


def cmd_edit(args) -> None:
    from nextscale.editing import check_box, fit_image, keep_mask_for, mask_from_image, save_edit
    from nextscale.images import load_image

    if (args.box is None) == (args.mask is None):
        raise UsageError("give the region to edit with --box Y0 X0 Y1 X1 or with --mask mask.png (one of them)")
    if args.mode == "class-edit" and args.class_id is None:
        raise UsageError("--mode class-edit needs --class K (the class to edit the box towards)")
    if args.samples <= 0:
        raise UsageError(f"--samples must be positive, got {args.samples}")
    if Path(args.out).suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise UsageError(f"--out {args.out}: name an image file (.png, .jpg, .webp)")
    if args.box is not None:
        check_box(*args.box)
    original = load_image(args.image)
    mask_picture = load_image(args.mask) if args.mask else None
    pipeline = load_pipeline(args)
    if args.class_id is not None and not 0 <= args.class_id < pipeline.num_classes:
        raise UsageError(f"class {args.class_id} is outside [0, {pipeline.num_classes})")
    image, resized = fit_image(original, pipeline.image_size)
    if resized:
        size = pipeline.image_size
        print(
            f"nextscale edit: note: {args.image} is {original.size[0]}×{original.size[1]}; "
            f"centre-cropped to a square and resized to {size}×{size}",
            file=sys.stderr,
        )
    regenerate = mask_from_image(mask_picture, pipeline.token_side, original.size) if mask_picture else None
    keep = keep_mask_for(args.mode, side=pipeline.token_side, box=args.box, mask_image=regenerate)
    results = pipeline.edit(
        image, keep, labels=args.class_id, samples=args.samples, seed=args.seed, **sampling_kwargs(args)
    )
    paths, strip = save_edit(args.out, pipeline.image_tensor(image)[0], keep, results)
    print(f"wrote {len(paths)} edited image(s): {', '.join(str(p) for p in paths)}")
    print(f"wrote the strip (input | regenerated region | results): {strip}")


# ---- sample-set -----------------------------------------------------------------------------------------------------


def cmd_sample_set(args) -> None:
    from nextscale.eval.sample_set import SampleSetConfig, expected_names, generate_sample_set, pack_npz, parse_classes
    from nextscale.sampling import SamplingSettings
    from nextscale.train.distributed import barrier, cleanup, setup_distributed

    config = SampleSetConfig(
        out_dir=args.out,
        per_class=args.per_class,
        classes=parse_classes(args.classes) if args.classes else None,
        batch_size=args.batch_size,
        seed=args.seed,
        settings=SamplingSettings(**sampling_kwargs(args)),
    )
    context = setup_distributed()
    try:
        if context.is_distributed:
            args.device = str(context.device)
        pipeline = load_pipeline(args)
        progress = not args.no_progress
        status = generate_sample_set(pipeline, config, context.rank, context.world_size, progress=progress)
        barrier()
        if context.is_main_process:
            npz = pack_npz(config.out_dir, expected_names(pipeline, config), pipeline.image_size, progress=progress)
            print(
                f"sample set: {status.total} images in {config.out_dir} (rank 0 found {status.existing}, wrote "
                f"{status.written}); settings in {Path(config.out_dir) / 'settings.json'}; packed into {npz}"
            )
    except BaseException:
        cleanup(synchronize=False)
        raise
    cleanup()


# ---- training -------------------------------------------------------------------------------------------------------
