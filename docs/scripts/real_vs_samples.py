"""Side-by-side picture: real test images (left) and class-conditional samples (right), one row per class.

python docs/scripts/real_vs_samples.py --model fmnist --out docs/fmnist_samples.png    # the model's own preset
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image, ImageDraw

from nextscale import SamplingSettings, from_pretrained, generate
from nextscale.data.build import build_dataset
from nextscale.images import make_grid
from nextscale.pretrained import read_metadata, recorded_sampling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--cfg", type=float, default=None, help="default: the model's own preset's (else 'quality')")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/fmnist_samples.png")
    args = parser.parse_args()

    tokenizer, model = from_pretrained(args.model)
    classes = read_metadata(args.model).get("classes") or [str(c) for c in range(model.num_classes)]
    size, n = tokenizer.config.image_size, args.per_class
    test = build_dataset(args.data, "test", size)
    real = {c: [] for c in range(model.num_classes)}
    for index in range(len(test)):
        image, label = test[index]
        if len(real[label]) < n:
            real[label].append((image + 1) / 2)
        if all(len(v) == n for v in real.values()):
            break
    real_images = torch.stack([img for c in range(model.num_classes) for img in real[c]])
    settings = SamplingSettings.resolve(recorded_sampling(args.model) or "quality", cfg=args.cfg)
    described = f"cfg {settings.cfg:g}" + (f", top-k {settings.top_k}" if settings.top_k else "")
    labels = [c for c in range(model.num_classes) for _ in range(n)]
    samples = generate(model, tokenizer, labels, settings, seed=args.seed).images
    upscale = max(1, 96 // size)
    left, right = make_grid(real_images, n, upscale=upscale), make_grid(samples, n, upscale=upscale)
    label_width, header = 110, 28
    canvas = Image.new("RGB", (label_width + left.width + 20 + right.width, header + left.height), "white")
    canvas.paste(left, (label_width, header))
    canvas.paste(right, (label_width + left.width + 20, header))
    draw = ImageDraw.Draw(canvas)
    draw.text((label_width, 8), "real test images", fill="black")
    draw.text((label_width + left.width + 20, 8), f"samples ({described}, seed {args.seed})", fill="black")
    row = (left.height - 2) / model.num_classes
    for c, name in enumerate(classes):
        draw.text((6, header + row * c + row / 2 - 6), name[:16], fill="black")
    canvas.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
