#!/usr/bin/env bash
# Regenerate Civitelli et al.'s signal propagation plots in one go: Fig. 2 (ResNet-50, ResNet-101)
# and Fig. 6 (ResNet-18), every scheme of the paper with both of its initialisations, at the
# published widths; batch 32 of unit-Gaussian 32x32x3 inputs, random labels, SEEDS repeats
# (mean and min-max band).  Figures: docs/figures/spp_<model>.png; the per-job spp.csv files stay
# under OUT.  About 15 minutes on 2 CPU cores with SEEDS=3 (ResNet-101 ConvShort: 16 s a repeat).
#
#   scripts/spp_figures.sh [OUT]        (SEEDS=1 scripts/spp_figures.sh for a quick look)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/spp-paper}
SEEDS=${SEEDS:-3}
MODELS=resnet18,resnet50,resnet101
rm -rf "$OUT"
# The paper's baselines: He fan-in and fan-out, without and with BatchNorm (section 4, first two items).
nfbench spp -m model=$MODELS init=plain,bn init.weights=he_fanin,he_fanout spp.seeds="$SEEDS" \
  hydra.sweep.dir="$OUT/baselines"
# Its three residual sums with their own initialisation (He fan-out) and with Brock et al.'s.
nfbench spp -m model=$MODELS init=idshort,learnscalar,convshort init.weights=he_fanout,brock \
  spp.seeds="$SEEDS" hydra.sweep.dir="$OUT/proposed"
nfbench spp-plot "$OUT/baselines" "$OUT/proposed" --out docs/figures
# The numbers docs/spp.md quotes: first and last block, and the largest block-to-block step.
python - "$OUT" <<'PY'
import sys
from pathlib import Path
from nfbench.analysis.spp import read_csv
print("| model | scheme | weights | fwd first ... last (max/min) | bwd first ... last (max/min) |")
print("| --- | --- | --- | --- | --- |")
rows = [read_csv(p) for p in sorted(Path(sys.argv[1]).rglob("spp.csv"))]
order = {m: i for i, m in enumerate(("resnet18", "resnet50", "resnet101"))}
for r in sorted(rows, key=lambda r: (order[r[0]["model"]], r[0]["init"], r[0]["weights"])):
    f, b = [x["fwd_var"] for x in r], [x["bwd_var"] for x in r]
    print(f"| {r[0]['model']} | {r[0]['init']} | {r[0]['weights']} | {f[0]:.2g} ... {f[-1]:.2g} "
          f"({max(f) / min(f):.3g}) | {b[0]:.2g} ... {b[-1]:.2g} ({max(b) / min(b):.3g}) |")
PY
