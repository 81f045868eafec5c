"""Assemble BENCHMARKS.md from the per-area pages ``benchmarks/<area>.md`` (kept beside their scripts).

    python benchmarks/_assemble_benchmarks_md.py           # rewrite BENCHMARKS.md
    python benchmarks/_assemble_benchmarks_md.py --check   # exit 1 if BENCHMARKS.md is stale
"""
import sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]
order = ["tiling", "stain", "dino", "dino_learning", "features", "probe"]
parts = ["""# Benchmarks

Every speed claim of the kit is a script under `benchmarks/` that prints one JSON line and compares
against the established library *in the same run* (a ratio, since these machines are noisy). This page
collects the commands and the measured lines; each section is maintained beside its script as
`benchmarks/<area>.md` and copied here. Unless stated otherwise the numbers were measured on the
project's 2-core CPU machine, often while other jobs were running (load averages are recorded in the
lines where known), so absolute rates are pessimistic and the ratios are what to compare.

No GPU was available to this project's sessions so far: the GPU paths (`bench_stain.py` at batch 1,024,
`bench_dino_gpu.py` for the `paper` preset's images/s and MFU, `bench_features.py` on CUDA) are written
and exit cleanly without CUDA, but their figures are still to be recorded.

| claim | script | target | measured (ratio vs reference) |
|---|---|---|---|
| tissue coordinates for a 40,000² px slide | `bench_tiling.py` | < 2 s/slide | see Tiling |
| batched Macenko vs torchstain's per-image loop | `bench_stain.py` | ≥ 20× | exact 11–16× (not met); fit-once/apply 39–54×; `pixel_stride=4` 23–31×; GPU not measured |
| `cpu-demo` DINO training vs lightly's DINO blocks | `bench_dino.py` | ≥ 1.0× | see DINO |
| ViT-B/16 extraction, t-SNE/UMAP on 10k × 768, metrics | `bench_features.py` | t-SNE < 1 min | see Features |
| 12,500-iteration linear probe on 100k × 768 | `bench_probe.py` | < 1 min | see Probe |
"""]
for name in order:
    p = root / "benchmarks" / f"{name}.md"
    if p.exists():
        txt = p.read_text().strip()
        lines = txt.splitlines()
        # demote headings one level so the page has one H1
        lines = [("#" + l) if l.startswith("#") else l for l in lines]
        parts.append("\n".join(lines) + f"\n\n_(from `benchmarks/{name}.md`)_\n")
text = "\n\n".join(parts)
target = root / "BENCHMARKS.md"
if "--check" in sys.argv[1:]:
    if not target.exists() or target.read_text() != text:
        sys.exit(f"{target} is out of date with benchmarks/*.md: run python {Path(__file__).relative_to(root)}")
    print("BENCHMARKS.md is up to date")
else:
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    print(f"wrote {target}")
