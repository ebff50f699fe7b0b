"""How much each residual branch adds under init=wn, pre-activation block against Arpit et al.'s own.

Arpit, Campos, Bengio 2019 (victorcampos7/weightnorm-init, ``models/residual_blocks.py``) assume the
branch f(x) = conv2(relu(conv1(x))) on the raw block input x: with conv1's gain 2 and conv2's 1/N, each
block of a stage of N adds Var(x) / N.  nfbench's block applies a ReLU first, f(x) = conv2(relu(conv1(relu(x)))),
and relu(x) keeps about half of a symmetric x's second moment.  For every non-transition block of a freshly
initialised network this prints, averaged over the blocks (min-max in brackets):

  pre/paper     Var(f_nfbench(x)) / Var(f_paper(x)), the same weights on the same block input
  paper N       Var(f_paper(x)) * N / Var(x): 1 is the paper's assumption
  nfbench N     Var(f_nfbench(x)) * N / Var(x)

and, for every transition block, Var(W_s relu(x)) / Var(W_s x): our 1x1 shortcut reads the activated input.

    OMP_NUM_THREADS=1 python scripts/wn_branch_variance.py      # about 15 s on one core
"""

from __future__ import annotations

import statistics

import torch
from torch.nn import functional as F

from nfbench.config import option_config
from nfbench.models import build_model, split_stages
from nfbench.schemes import build_scheme


def block_inputs(net: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append(i[0])) for b in net.blocks]
    net(x)
    for h in hooks:
        h.remove()
    return seen


@torch.no_grad()
def measure(model: str, width: int, seed: int, batch: int = 32) -> dict[str, list[float]]:
    torch.manual_seed(seed)
    net = build_model(option_config("model", model, width=width), build_scheme(option_config("init", "wn")), 10, 3, 32)
    inputs = dict(zip(net.blocks, block_inputs(net, torch.randn(batch, 3, 32, 32))))
    rows: dict[str, list[float]] = {"pre/paper": [], "paper N": [], "nfbench N": [], "shortcut": []}
    for stage in split_stages(net.blocks):
        for block in stage:
            x = inputs[block]
            if block.transition:
                conv = block.shortcut.conv
                rows["shortcut"].append((conv(F.relu(x)).var() / conv(x).var()).item())
                continue
            ours = block(x) - block.skip(x)
            paper = block.branch[0](x)
            for conv in block.branch[1:]:
                paper = conv(F.relu(paper))
            rows["pre/paper"].append((ours.var() / paper.var()).item())
            rows["paper N"].append((paper.var() * len(stage) / x.var()).item())
            rows["nfbench N"].append((ours.var() * len(stage) / x.var()).item())
    return rows


def main() -> None:
    print("| model | width | seed | pre/paper | paper N | nfbench N | shortcut relu/raw |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for model, width in (("resnet20", 64), ("resnet56", 32), ("resnet50", 16)):
        for seed in (0, 1, 2):
            rows = measure(model, width, seed)
            cells = [f"{statistics.mean(v):.2f} [{min(v):.2f}, {max(v):.2f}]" for v in rows.values()]
            print(f"| {model} | {width} | {seed} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
