"""`nextscale demo`: the local web page (nextscale/demo), for a model directory or official checkpoints.

Needs the `demo` extra (starlette, uvicorn); the rest of the command line works without it."""

from __future__ import annotations

import time

from nextscale.cli.common import UsageError, add_command, add_model_source, check_positive, load_pipeline
from nextscale.cli.generate import add_quantize


def add_commands(commands) -> None:
    p = add_command(commands, "demo", cmd_demo)
    add_model_source(p)
    add_quantize(p)
    group = p.add_argument_group("server")
    group.add_argument("--port", type=int, default=7860, help="port to listen on (0: any free port)")
    group.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on; other than loopback, anyone who can reach it can use it",
    )
    group.add_argument("--open", action="store_true", help="open the page in the default web browser")
    group.add_argument("--max-images", type=int, default=16, help="most images one request may ask for")


def cmd_demo(args) -> None:
    try:
        from nextscale.demo.model import DemoModel, ModelSource
        from nextscale.demo.requests import DemoLimits
        from nextscale.demo.server import build_engine, serve
    except ImportError as err:
        raise UsageError(str(err)) from None

    check_positive(args.max_images, "--max-images")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: a port is in [0, 65535] (0 picks a free one)")
    started = time.perf_counter()
    if not (args.model or args.vae or args.var):
        args.model = "fmnist"  # the shipped Fashion-MNIST model; the page names the model it runs
    pipeline = load_pipeline(args)
    source = ModelSource(
        model=args.model,
        vae=None if args.model else args.vae,
        var=None if args.model else args.var,
        num_heads=args.num_heads,
        device=args.device,
        bf16=args.bf16,
        fast=args.fast,
        quantize=args.quantize,
        refiner=args.refiner,
    )
    engine = build_engine(source, DemoLimits(max_images=args.max_images), DemoModel(pipeline))
    serve(engine, args.host, args.port, args.open, time.perf_counter() - started)
