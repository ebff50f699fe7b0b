"""The ``nfbench`` command: ``nfbench COMMAND [hydra overrides]``.

Each Hydra command is a thin ``@hydra.main`` wrapper around a plain function
(``train(cfg)``, ...), so every Hydra facility works: ``--cfg job``, ``-m``,
``--help``, ``--info`` and shell completion.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import resources
from typing import Callable, Optional

import hydra
from omegaconf import DictConfig

from nfbench.config import register_configs
from nfbench.errors import ConfigError, DataNotFoundError, RunDirectoryError

log = logging.getLogger("nfbench")

CONF_DIR = str(resources.files("nfbench.conf"))


def _user_errors(fn: Callable[[DictConfig], Optional[dict]]) -> Callable[[DictConfig], Optional[dict]]:
    """Report mistakes a user can fix in one line, without a traceback."""

    def run(cfg: DictConfig) -> Optional[dict]:
        try:
            return fn(cfg)
        except (ConfigError, DataNotFoundError, RunDirectoryError) as e:
            log.error("%s", e)
            print(f"nfbench: error: {e}", file=sys.stderr)
            sys.exit(2)

    run.__name__ = fn.__name__
    return run


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def _train(cfg: DictConfig) -> Optional[dict]:
    from nfbench.train import train

    return _user_errors(train)(cfg)


@hydra.main(config_path=CONF_DIR, config_name="spp_command", version_base=None)
def _spp(cfg: DictConfig) -> Optional[dict]:
    from nfbench.spp import run_spp

    return _user_errors(run_spp)(cfg)


@hydra.main(config_path=CONF_DIR, config_name="summary_command", version_base=None)
def _summary(cfg: DictConfig) -> Optional[dict]:
    from nfbench.summary import summary

    return _user_errors(summary)(cfg)


def _spp_plot() -> None:
    from nfbench.spp_plot import main as spp_plot

    spp_plot(sys.argv[1:])


def _report() -> None:
    from nfbench.report import main as report

    report(sys.argv[1:])


COMMANDS: dict[str, tuple[Callable[[], None], str]] = {
    "train": (_train, "train and evaluate a model (Hydra overrides: model=, init=, data=, ...)"),
    "spp": (_spp, "signal propagation plot at initialisation: per-block forward/backward variance (spp.*)"),
    "spp-plot": (_spp_plot, "overlay the spp.csv files under DIR ...: one figure per model"),
    "summary": (_summary, "parameters and FLOPs per stage (a list of models/schemes: one table; summary.json)"),
    "report": (_report, "table (Markdown + CSV) and accuracy curves over the runs under DIR ...: mean +- std over seeds"),
}

USAGE = """usage: nfbench COMMAND [OVERRIDES ...] [HYDRA FLAGS]

Residual networks without batch normalisation: train, inspect and compare.

commands:
{commands}

Hydra flags work after any Hydra command: --cfg job, -m/--multirun, --help, --info.
Examples:
  nfbench train experiment=quickstart
  nfbench train model=resnet50 init=convshort data=cifar100
  nfbench train -m seed=0,1,2 init=idshort,learnscalar,convshort
  nfbench report outputs/multirun/train/2026-01-01_00-00-00 --out report
  nfbench summary model=resnet18,resnet50,resnet101 init=idshort,convshort
  nfbench train --help
"""


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items())
    return USAGE.format(commands=lines)


def _completion_command() -> Optional[str]:
    """Hydra's shell completion calls ``nfbench -sc query=...`` with the typed line in COMP_LINE;
    take the command from that line and hide it from Hydra."""
    line = os.environ.get("COMP_LINE", "").split(" ")
    if len(line) >= 2 and line[1] in COMMANDS:
        os.environ["COMP_LINE"] = " ".join([line[0], *line[2:]])
        return line[1]
    return None


def main(argv: Optional[list[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    register_configs()
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return
    cmd = args[0]
    if cmd.startswith("-sc") or cmd.startswith("--shell-completion"):
        # Completion: `eval "$(nfbench -sc install=bash)"` installs it for every command.
        cmd = _completion_command() or "train"
        rest = args
    elif cmd in COMMANDS:
        rest = args[1:]
        if cmd == "summary":
            from nfbench.summary import wants_multirun

            # A list of models or schemes is a sweep: run it as one, so one table comes out.
            rest = ["--multirun", *rest] if wants_multirun(rest) else rest
    else:
        print(f"nfbench: unknown command '{cmd}'; choose one of: {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"nfbench {cmd}", *rest]
    COMMANDS[cmd][0]()


if __name__ == "__main__":
    main()
