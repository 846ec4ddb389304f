"""`nextscale sample`, `edit`, `sample-set`: images from a trained or released model."""

from __future__ import annotations

from pathlib import Path

from nextscale.cli.common import (
    UsageError,
    add_command,
    add_model_source,
    add_sampling,
    check_output_dir,
    check_output_file,
    check_positive,
    check_seed,
    load_pipeline,
    note,
)

# nextscale.quantization.QUANTIZATIONS, repeated here so that the parser needs no torch (a test keeps them equal)
QUANTIZATIONS = ("int8",)


def add_quantize(parser) -> None:
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        help="int8: the transformer's block linears dynamically quantised to int8 (CPU, fp32 only; faster where "
        "measured, and draws other tokens than fp32: see nextscale.inference)",
    )


def add_commands(commands) -> None:
    from nextscale.edit_modes import EDIT_MODES

    p = add_command(commands, "sample", cmd_sample)
    add_model_source(p)
    add_quantize(p)
    add_sampling(p, "demo")
    p.add_argument("--class", dest="classes", type=int, action="append", help="class id (repeat); default 0…9")
    p.add_argument("--per-class", type=int, default=4, help="samples of each class (one grid row per class)")
    p.add_argument("--batch-size", type=int, default=16, help="images per sampler call")
    p.add_argument("--out", default="samples.png", help="grid image file")

    p = add_command(commands, "edit", cmd_edit)
    add_model_source(p)
    add_quantize(p)
    add_sampling(p, "edit")
    p.add_argument("--image", required=True, help="input picture (centre-cropped and resized to the model's size)")
    p.add_argument("--box", type=float, nargs=4, metavar=("Y0", "X0", "Y1", "X1"), help="region, fractions in [0, 1]")
    p.add_argument("--mask", help="mask picture instead of --box: white = regenerate; square or the input's size")
    p.add_argument(
        "--mode", choices=EDIT_MODES, default="inpaint", help="inpaint/class-edit: redo the region; outpaint: keep it"
    )
    p.add_argument("--class", dest="class_id", type=int, help="class for the regenerated region (class-edit needs one)")
    p.add_argument("--samples", type=int, default=1, help="results to draw (one file each)")
    p.add_argument("--out", default="edit.png", help="result file; the strip goes to <stem>_strip<suffix>")

    p = add_command(commands, "sample-set", cmd_sample_set)
    add_model_source(p)
    add_quantize(p)
    add_sampling(p, "fid")
    p.add_argument("--per-class", type=int, default=50, help="images of each class (50 × 1000 = the official 50k)")
    p.add_argument("--classes", help="ids and ranges such as 0-999 or 1,5,7 (default: every class)")
    p.add_argument("--batch-size", type=int, default=64, help="part of the recipe: a resumed run must keep it")
    p.add_argument("--out", default="samples", help="folder of PNGs; rerun the same command to resume")
    p.add_argument(
        "--rejection",
        type=int,
        default=1,
        help="candidates per image; > 1 keeps the one the Fashion-MNIST evaluation classifier scores highest for its "
        "class (the paper's -re rows; costs that many times the sampling)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_sample(args) -> None:
    import torch

    from nextscale.images import save_grid

    check_positive(args.per_class, "--per-class")
    check_positive(args.batch_size, "--batch-size")
    check_seed(args.seed)
    check_output_file(args.out)
    pipeline = load_pipeline(args)
    classes = args.classes if args.classes else list(range(min(pipeline.num_classes, 10)))
    for c in classes:
        if not 0 <= c < pipeline.num_classes:
            raise UsageError(f"--class {c} is outside [0, {pipeline.num_classes})")
    labels = [c for c in classes for _ in range(args.per_class)]
    chunks = []
    for begin in range(0, len(labels), args.batch_size):
        batch = labels[begin : begin + args.batch_size]
        chunks.append(pipeline.generate(batch, seed=args.seed + begin))
    images = torch.cat(chunks)
    upscale = max(1, 128 // images.shape[-1])
    path = save_grid(images, args.out, columns=args.per_class if len(classes) > 1 else 8, upscale=upscale)
    print(f"wrote {len(labels)} samples ({len(classes)} classes × {args.per_class}) to {path}")


def cmd_edit(args) -> None:
    from nextscale.editing import check_box, fit_image, keep_mask_for, mask_from_image, save_edit
    from nextscale.images import load_image

    if (args.box is None) == (args.mask is None):
        raise UsageError("give the region to edit with --box Y0 X0 Y1 X1 or with --mask mask.png (one of them)")
    if args.mode == "class-edit" and args.class_id is None:
        raise UsageError("--mode class-edit needs --class K (the class to edit the region towards)")
    check_positive(args.samples, "--samples")
    check_seed(args.seed)
    check_output_file(args.out)
    if args.box is not None:
        check_box(*args.box)
    original = load_image(args.image)
    mask_picture = load_image(args.mask) if args.mask else None
    pipeline = load_pipeline(args)
    if args.class_id is not None and not 0 <= args.class_id < pipeline.num_classes:
        raise UsageError(f"--class {args.class_id} is outside [0, {pipeline.num_classes})")
    image, resized = fit_image(original, pipeline.image_size)
    if resized:
        size = pipeline.image_size
        width, height = original.size
        note("edit", f"{args.image} is {width}×{height}; centre-cropped to a square and resized to {size}×{size}")
    regenerate = mask_from_image(mask_picture, pipeline.token_side, original.size) if mask_picture else None
    keep = keep_mask_for(args.mode, side=pipeline.token_side, box=args.box, mask_image=regenerate)
    results = pipeline.edit(image, keep, labels=args.class_id, samples=args.samples, seed=args.seed)
    paths, strip = save_edit(args.out, pipeline.image_tensor(image)[0], keep, results)
    print(f"wrote {len(paths)} edited image(s): {', '.join(str(p) for p in paths)}")
    print(f"wrote the strip (input | regenerated region | results): {strip}")


def cmd_sample_set(args) -> None:
    from nextscale.cli.common import sampling_settings
    from nextscale.distributed import barrier, cleanup, setup_distributed
    from nextscale.eval.sample_set import SampleSetConfig, expected_names, generate_sample_set, pack_npz, parse_classes

    check_seed(args.seed)
    check_output_dir(args.out)
    config = SampleSetConfig(
        out_dir=args.out,
        per_class=args.per_class,
        classes=parse_classes(args.classes) if args.classes else None,
        batch_size=args.batch_size,
        seed=args.seed,
        settings=sampling_settings(args),
        rejection=args.rejection,
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
