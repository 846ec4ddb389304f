"""Zero-shot editing on real test images: in-painting, out-painting and class-conditional editing, three samples
each, one row per edit (input, mask, samples).

    python docs/scripts/edit_examples.py --model runs/fmnist/var/model --out docs/fmnist_editing.png
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw

from nextscale.data.build import build_dataset
from nextscale.editing import edit_strip, keep_mask_for
from nextscale.pipeline import Pipeline

# (mode, box (y0, x0, y1, x1) in fractions, class to edit towards or None, class of the test image to edit)
EDITS = [
    ("inpaint", (0.3, 0.3, 0.7, 0.7), None, "Ankle boot"),
    ("inpaint", (0.0, 0.5, 1.0, 1.0), None, "Pullover"),
    ("outpaint", (0.25, 0.25, 0.75, 0.75), None, "Trouser"),
    ("outpaint", (0.0, 0.0, 0.5, 1.0), None, "Dress"),
    ("class-edit", (0.5, 0.0, 1.0, 1.0), "Dress", "T-shirt/top"),
    ("class-edit", (0.0, 0.0, 0.6, 1.0), "Ankle boot", "Sneaker"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="docs/fmnist_editing.png")
    args = parser.parse_args()

    pipe = Pipeline.from_pretrained(args.model)
    test = build_dataset(args.data, "test", pipe.image_size)
    names = pipe.class_names or [str(c) for c in range(pipe.num_classes)]
    rows, captions = [], []
    first_of_class = {}
    for index in range(len(test)):
        first_of_class.setdefault(test[index][1], index)
        if len(first_of_class) == pipe.num_classes:
            break
    for i, (mode, box, target, source) in enumerate(EDITS):
        image, label = test[first_of_class[names.index(source)]]
        image01 = (image + 1) / 2
        keep = keep_mask_for(mode, side=pipe.token_side, box=box)
        label_arg = None if target is None else names.index(target)
        results = pipe.edit(image01, keep, labels=label_arg, samples=args.samples, seed=args.seed + i, mode=mode)
        rows.append(edit_strip(image01, keep, results))
        what = f"{mode} of a {names[label]}" + (f" -> {target}" if target else "")
        captions.append(f"{what}, box {box}")
    width, caption_height = max(r.width for r in rows), 16
    canvas = Image.new("RGB", (width, sum(r.height + caption_height for r in rows)), "white")
    draw, top = ImageDraw.Draw(canvas), 0
    for row, caption in zip(rows, captions):
        draw.text((4, top + 2), caption, fill="black")
        canvas.paste(row, (0, top + caption_height))
        top += row.height + caption_height
    canvas.save(args.out)
    print(f"wrote {args.out}: input, regenerated region (tinted), {args.samples} samples per row")


if __name__ == "__main__":
    main()
