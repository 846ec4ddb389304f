"""docs/performance.md's side-by-side table, generated from docs/data/side_by_side.json (no number typed by hand).

    python benchmarks/official_side_by_side.py --official-src ../VAR --batch-sizes 1,4,8 --repeats 3 \
        --precisions fp32 --train-depth 8 --train-batch-size 4 --json docs/data/side_by_side.json   # idle machine
    python docs/scripts/side_by_side_report.py            # the table between <!-- side_by_side:table --> markers
    python docs/scripts/side_by_side_report.py --check    # exit 1 when docs/performance.md differs

Every timing is the best of the benchmark's interleaved rounds (official, nextscale, official, …); the spread column
is the larger of the two implementations' (max − min) / min over the rounds, so a ratio inside it is within noise.
The matmul peak is the best of the run's measurements (one per batch size) in that precision.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
DATA = DOCS / "data" / "side_by_side.json"
DOCUMENT = DOCS / "performance.md"
PARTS = {"sampling": "sampling with decode", "decoder": "decoder alone", "training": "training step"}


def spread(seconds: list[float]) -> float:
    return (max(seconds) - min(seconds)) / min(seconds)


def table(run: dict) -> str:
    records = run["records"]
    tokens = {r["batch"]: r for r in records if r["part"] == "same tokens"}
    lines = ["| what | batch | official | nextscale | nextscale / official | round-to-round spread |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for part in PARTS:
        for r in (r for r in records if r["part"] == part and "official" in r["seconds"]):
            official, ours = r["seconds"]["official"], r["seconds"]["nextscale"]
            what = PARTS[part] + (f", d{r['depth']}" if "depth" in r else "") + f" ({r['precision']})"
            noise = max(spread(official), spread(ours))
            lines.append(f"| {what} | {r['batch']} | {min(official):.2f} s | {min(ours):.2f} s | "
                         f"**{min(official) / min(ours):.2f}×** | ±{100 * noise:.0f} % |")  # fmt: skip
    lines.append("")
    transformer = [r for r in records if r["part"] == "transformer"]
    # the machine's peak: the best of the run's measurements (one taken while something else ran reads low)
    peaks = {r["precision"]: max(t["matmul_peak_flops_per_s"] for t in transformer if t["precision"] == r["precision"])
             for r in transformer}  # fmt: skip
    for r in transformer:
        same = tokens.get(r["batch"])
        identical = f"{same['identical']:,} of {same['total']:,} drawn tokens identical; " if same else ""
        peak = peaks[r["precision"]]
        lines.append(f"- batch {r['batch']}: {identical}the transformer ran {r['flops'] / 1e12:.2f} TFLOP in "
                     f"{r['seconds']:.2f} s, {r['flops'] / r['seconds'] / peak:.1%} of the measured "
                     f"{r['precision']} matmul peak ({peak / 1e12:.3f} TFLOP/s)")  # fmt: skip
    machine = run["machine"]
    lines.append("")
    lines.append(f"Machine: {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}. Command: "
                 f"`{run['command']}`.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from nextscale.marked_sections import check_document, replace_marked_sections

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the document differs")
    args = parser.parse_args(argv)
    document = args.document.read_text()
    rendered = replace_marked_sections(document, "side_by_side", {"table": table(json.loads(args.data.read_text()))})
    if args.check:
        return check_document(args.document, rendered, args.data, Path(__file__).name)
    args.document.write_text(rendered)
    print(f"{args.document} rewritten from {args.data}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
