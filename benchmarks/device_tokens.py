"""Does an accelerator draw the CPU's tokens? A small seeded VAR and tokenizer, sampled in fp32 on the CPU and on
`--device`, greedily (top-k 1, so the draw does not depend on the device's random stream, which differs between a
CPU and a CUDA generator), with guidance; and the teacher-forced logits of the same tokens on both.

    python benchmarks/device_tokens.py --device cuda        # exit status 1 when a token differs
    python benchmarks/device_tokens.py --device cpu         # the harness itself (both sides on the CPU)
"""

from __future__ import annotations

import argparse
import sys

import torch

from nextscale.model.config import var_preset
from nextscale.model.var import VAR
from nextscale.sampling import SamplingSettings, generate
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="fmnist-tiny", help="VAR preset (on the fmnist-32 tokenizer)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 on both sides
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    tokenizer = Tokenizer(tokenizer_preset("fmnist-32")).eval()
    model = VAR(var_preset(args.preset, num_classes=10), tokenizer.token_space).eval()
    labels = [i % 10 for i in range(args.batch_size)]
    settings = SamplingSettings(cfg=2.0, top_k=1)
    on_cpu = generate(model, tokenizer, labels, settings, seed=0)
    on_device = generate(model.to(args.device), tokenizer.to(args.device), labels, settings, seed=0)
    total = sum(t.numel() for t in on_cpu.token_maps)
    same = sum(int((a == b.cpu()).sum()) for a, b in zip(on_cpu.token_maps, on_device.token_maps))
    with torch.no_grad():
        labels_B = torch.tensor(labels)
        inputs = tokenizer.cpu().teacher_input(on_cpu.token_maps)
        logits_cpu = model.cpu()(labels_B, inputs, drop_labels=False)
        device_inputs = inputs.to(args.device)
        logits_device = model.to(args.device)(labels_B.to(args.device), device_inputs, drop_labels=False).cpu()
    difference = float((logits_cpu - logits_device).abs().max())
    print(f"{args.device} against cpu, fp32, {args.preset}, batch {args.batch_size}: {same} of {total} greedy tokens "
          f"identical; teacher-forced logits differ by at most {difference:.2e}")  # fmt: skip
    return 0 if same == total else 1


if __name__ == "__main__":
    sys.exit(main())
