"""docs/performance.md's frontier table and docs/speed_quality.png from the frontier's records
(`nextscale.experiments.speed_quality`): speed and FID cost of every option against the exact path, where a batch
spends its time, and the fast choice."""

from __future__ import annotations

from pathlib import Path

from nextscale.experiments.speed_quality import FID_BUDGET, fastest_within_budget, summarized


def table(data: dict) -> str:
    rows = summarized(data)
    lines = ["| option | images/s, batch 100 | × exact | ms / image, batch 1 | × exact | FID (mean ± sd) | "
             "FID vs exact (± sd of the per-seed change) | class acc. | recall | seeds |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        speed = r["speed"]
        timing = "— | — | — | —"
        if speed:
            timing = (f"{speed['images_per_s_batch100']:.1f} | {r.get('speedup_batch100', 1):.2f}× | "
                      f"{speed['latency_ms_batch1']:.1f} | {r.get('speedup_batch1', 1):.2f}×")  # fmt: skip
        lines.append(f"| {r['name']} | {timing} | {r['fid']:.2f} ± {r['fid_sd']:.2f} | "
                     f"{100 * r.get('fid_change', 0):+.1f} ± {100 * r.get('fid_change_sd', 0):.1f} % | "
                     f"{100 * r['class_accuracy']:.1f} % | {r['recall']:.3f} | {r['seeds']} |")  # fmt: skip
    refiners = sorted({r["refiner"] for r in rows if r["refiner"]})
    if refiners:
        lines.append("")
        lines.append(f"Refiner of the collaborative-decoding rows: {', '.join(refiners)} (the model drafts the scales "
                     f"before the handover, the refiner draws the rest).")  # fmt: skip
    best = fastest_within_budget(rows)
    exact = next((r for r in rows if r["name"] == "exact" and r["speed"]), None)
    if best is not None and exact is not None and "decoder_nhwc_seconds_batch100" in data:
        lines.append("")
        lines.append(time_split(data, exact, best))
    if exact is not None and "draw_seconds" in data:
        lines.append("")
        lines.append(draw_split(data, exact))
    if best is not None:
        lines.append("")
        lines.append(f"Fastest option of the model alone within +{100 * FID_BUDGET:.0f} % FID of the exact path: "
                     f"**{best['name']}** "
                     f"({best['speedup_batch100']:.2f}× at batch 100, {best['speedup_batch1']:.2f}× at batch 1, "
                     f"FID {100 * best['fid_change']:+.1f} ± {100 * best['fid_change_sd']:.1f} %).")  # fmt: skip
        if best["fid_change"] + best["fid_change_sd"] > FID_BUDGET:
            lines.append(f"It is within the budget by its mean only: one sd of its per-seed FID change reaches past "
                         f"+{100 * FID_BUDGET:.0f} %, so with {best['seeds']} seeds it is at the edge of the budget, "
                         f"not safely inside it.")  # fmt: skip
    return "\n".join(lines) + "\n"


def time_split(data: dict, exact: dict, best: dict) -> str:
    """Where a batch of 100 spends its time on the exact path and on the fastest option: the decoder alone (timed
    separately, in the option's layout) and the rest (the transformer, the sampler and the f̂ updates)."""

    def split(row: dict) -> tuple[float, float]:
        total = 100 / row["speed"]["images_per_s_batch100"]
        decoder = data[
            "decoder_nhwc_seconds_batch100" if row["prepare"].get("channels_last") else "decoder_seconds_batch100"
        ]
        return total - decoder, decoder

    (rest0, decoder0), (rest1, decoder1) = split(exact), split(best)
    return (f"Batch of 100, exact path → {best['name']}: transformer and sampler {rest0:.2f} s → {rest1:.2f} s "
            f"({rest0 / rest1:.2f}×), decoder {decoder0:.2f} s → {decoder1:.2f} s "
            f"({decoder0 / decoder1:.2f}×).")  # fmt: skip


def draw_split(data: dict, exact: dict) -> str:
    """What the token draw alone costs, per batch of 100 and per image at batch 1, against the exact path's time."""
    parts = []
    for key, total, unit, scale in (("batch100", 100 / exact["speed"]["images_per_s_batch100"], "s", 1),
                                    ("batch1", exact["speed"]["latency_ms_batch1"] / 1000, "ms", 1000)):  # fmt: skip
        multinomial, inverse = data["draw_seconds"][key]["multinomial"], data["draw_seconds"][key]["inverse_cdf"]
        parts.append(f"{'a batch of 100' if key == 'batch100' else 'one image at batch 1'}: multinomial "
                     f"{scale * multinomial:.3g} {unit} ({100 * multinomial / total:.0f} % of the exact path's time), "
                     f"inverse-CDF {scale * inverse:.3g} {unit} ({multinomial / inverse:.1f}× less)")  # fmt: skip
    return "The token draw alone (every scale, the preset's top-k, random logits), " + "; ".join(parts) + "."


def plot(data: dict, path: Path) -> Path:
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in summarized(data) if r["speed"]]
    figure = Figure(figsize=(13, 4.6))
    FigureCanvasAgg(figure)
    colors = matplotlib.colormaps["tab20"]
    axes = figure.subplots(1, 2)
    for ax, key, label in zip(axes, ("images_per_s_batch100", "latency_ms_batch1"),
                              ("images/s at batch 100", "images/s at batch 1 (1000 / latency in ms)")):  # fmt: skip
        for i, r in enumerate(rows):
            speed = r["speed"][key] if key.startswith("images") else 1000 / r["speed"][key]
            exact = r["name"] == "exact"
            ax.errorbar(speed, r["fid"], yerr=r["fid_sd"], fmt="*" if exact else "o", ms=13 if exact else 7,
                        color="black" if exact else colors(i % 20), capsize=3, label=r["name"])  # fmt: skip
        budget = next(r["fid"] for r in rows if r["name"] == "exact") * (1 + FID_BUDGET)
        ax.axhline(budget, color="tab:red", linestyle="--", linewidth=1, label=f"exact +{100 * FID_BUDGET:.0f} % FID")
        ax.set_xlabel(label)
        ax.set_ylabel("FID (2,000 samples; mean ± sd over seeds)")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 0.8, 1))
    figure.savefig(path, dpi=110)
    return path
