"""The ``nfbench`` command: ``nfbench COMMAND [hydra overrides]``.

Each Hydra command is a thin ``@hydra.main`` wrapper around a plain function
(``train(cfg)``, ...), so every Hydra facility works: ``--cfg job``, ``-m``,
``--help``, ``--info`` and shell completion.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, NoReturn, Optional

import hydra
from omegaconf import DictConfig

from nfbench.cli.help import register_help
from nfbench.cli.refusal import refuse
from nfbench.config import OPTION_SCHEMAS
from nfbench.configstore import register_configs
from nfbench.engine.sweep import in_multirun
from nfbench.engine.validation import validate
from nfbench.errors import USER_ERRORS, ConfigError

log = logging.getLogger("nfbench")

CONF_DIR = str(resources.files("nfbench.conf"))


@dataclass
class SweepTally:
    """The points of this process's multirun: how many ran, and the job directories of invalid ones."""

    points: int = 0
    invalid: list[str] = field(default_factory=list)
    started: bool = False  # a task function of this process has started (Hydra set up its run directory)


SWEEP = SweepTally()
INTERRUPTED = "interrupted by SIGINT (Ctrl-C); rerun the same command to start or continue the run"


def _record_invalid(cfg: DictConfig, error: Exception) -> None:
    """Write the refused point's result.json: status "invalid", the message, and the keys that
    ``nfbench report`` groups on, so the report lists it beside the points that ran."""
    from hydra.core.hydra_config import HydraConfig

    from nfbench import rundir
    from nfbench.schemes import weight_rule

    job_dir = Path(HydraConfig.get().runtime.output_dir)
    SWEEP.invalid.append(str(job_dir))
    if any((job_dir / name).exists() for name in ("result.json", "metrics.jsonl", rundir.CHECKPOINTS)):
        # A refused resume or a busy directory: its files belong to a run, which the refusal leaves alone.
        log.error("%s (the sweep goes on; %s holds a run of its own, left as it was)", error, job_dir)
        return
    try:
        weights = weight_rule(cfg.init.name, cfg.init.weights)
    except ConfigError:  # an unknown scheme: the point is invalid for that reason
        weights = cfg.init.weights and str(cfg.init.weights)
    rundir.write_json(
        job_dir / "result.json",
        {
            "status": "invalid",
            "error": str(error),
            "data": cfg.data.name,
            "model": cfg.model.name,
            "init": cfg.init.name,
            "weights": weights,
            "seed": cfg.seed,
            "experiment": cfg.get("experiment"),
        },
    )
    log.error("%s (recorded as an invalid point in %s; the sweep goes on)", error, job_dir / "result.json")


def _user_errors(
    fn: Callable[[DictConfig], Optional[dict]], sweep_points: bool = False
) -> Callable[[DictConfig], Optional[dict]]:
    """Report mistakes a user can fix in one line, without a traceback, exit code 2.  With
    ``sweep_points``, a multirun's invalid point is recorded in its job directory instead and the
    sweep goes on; :func:`main` exits 2 once the sweep is over."""

    def run(cfg: DictConfig) -> Optional[dict]:
        multirun = sweep_points and in_multirun()
        SWEEP.points += multirun
        SWEEP.started = True
        try:
            return fn(cfg)
        except USER_ERRORS as e:
            if multirun:
                _record_invalid(cfg, e)
                return None
            refuse(e)
        except KeyboardInterrupt:  # SIGINT outside the epochs (training itself checkpoints and exits 130)
            refuse(INTERRUPTED, code=128 + signal.SIGINT)

    run.__name__ = fn.__name__
    return run


@hydra.main(config_path=CONF_DIR, config_name="config", version_base=None)
def _train(cfg: DictConfig) -> float:
    """Returns the run's optimized_metric, the value a sweeper such as Optuna optimises."""
    from nfbench.cli.objective import objective

    return objective(cfg, _user_errors(_validated_train, sweep_points=True)(cfg))


def _validated_train(cfg: DictConfig) -> dict:
    """A bad value is refused before torch loads (seconds): validate, then import the training code,
    which trains from the plan validation made."""
    plan = validate(cfg)
    from nfbench.engine.loop import train

    return train(cfg, plan)


# The jobs of a pack (hydra/launcher=packed, hydra_plugins/nfbench_packed_launcher): _train cut where the pack
# trains, so that a job of a pack is refused, recorded and scored as a job alone is.


def trains(task_function: Callable[..., Any]) -> bool:
    """Whether ``task_function`` is ``nfbench train``'s, the one task a pack runs; the jobs of every other
    command (``nfbench summary -m``, ``spp -m``) are launched one after the other, as without packing."""
    return task_function is getattr(_train, "__wrapped__", None)


def _start(cfg: DictConfig) -> Any:
    from nfbench.engine.loop import start_of

    return start_of(cfg, validate(cfg))


def prepare_packed_job(cfg: DictConfig) -> Optional[Any]:
    """_train up to the training: the job's :class:`nfbench.engine.loop.RunStart`, or None for a job refused
    by validation or the checks made before any file (recorded as an invalid point in its job directory)."""
    return _user_errors(_start, sweep_points=True)(cfg)


def score_packed_job(cfg: DictConfig, outcome: Optional[dict | Exception]) -> float:
    """_train after the training: the job's value for the sweeper from its run's result, from the error that
    ended it (a user error is recorded as an invalid point; any other is raised, as a job alone raises it)
    or from None, a job :func:`prepare_packed_job` refused."""
    from nfbench.cli.objective import objective

    if isinstance(outcome, USER_ERRORS):
        _record_invalid(cfg, outcome)
        return objective(cfg, None)
    if isinstance(outcome, BaseException):
        raise outcome
    return objective(cfg, outcome)


@hydra.main(config_path=CONF_DIR, config_name="spp_command", version_base=None)
def _spp(cfg: DictConfig) -> Optional[dict]:
    from nfbench.analysis.spp import run_spp

    return _user_errors(run_spp)(cfg)


@hydra.main(config_path=CONF_DIR, config_name="summary_command", version_base=None)
def _summary(cfg: DictConfig) -> Optional[dict]:
    from nfbench.analysis.summary import summary

    return _user_errors(summary)(cfg)


def _spp_plot() -> None:
    from nfbench.analysis.spp_plot import main as spp_plot

    spp_plot(sys.argv[1:])


def _report() -> None:
    from nfbench.analysis.report import main as report

    report(sys.argv[1:])


COMMANDS: dict[str, tuple[Callable[[], None], str]] = {
    "train": (_train, "train and evaluate a model (Hydra overrides: model=, init=, data=, ...)"),
    "spp": (_spp, "signal propagation plot at initialisation: per-block forward/backward variance (spp.*)"),
    "spp-plot": (_spp_plot, "overlay the spp.csv files under DIR ...: one figure per model"),
    "summary": (_summary, "parameters and FLOPs per stage (a list of models/schemes: one table; summary.json)"),
    "report": (
        _report,
        "table (Markdown + CSV) and accuracy curves over the runs under DIR ...: mean +- std over seeds",
    ),
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
  nfbench report outputs/multirun/train/2026-01-01_00-00-00    # table and curves into its report/
  nfbench summary model=resnet18,resnet50,resnet101 init=idshort,convshort data=cifar10
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


def one_line(message: str) -> str:
    """Hydra's and OmegaConf's multi-line messages as one line: the items of an indented list joined by
    commas after the line that introduces them; Hydra's config search path and OmegaConf's type notes
    (``reference_type=``, ``object_type=``) left out."""
    text: list[str] = []
    items: list[str] = []

    def flush() -> None:
        if items and text:
            text[-1] += " " + ", ".join(items)
        items.clear()

    skip = False
    for raw in message.splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw[0].isspace():
            if not skip and not line.startswith(("reference_type=", "object_type=")):
                items.append(line)
            continue
        flush()
        skip = line == "Config search path:"
        if not skip:
            text.append(line)
    flush()
    return "; ".join(text)


def _key_of_another_option(error: Optional[Exception]) -> Optional[str]:
    """For a key the selected option lacks but another option has (``init.alpha`` under ``init=bn``), the
    message that names the options it belongs to, instead of Hydra's advice to append it with ``+``."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = getattr(error, "full_key", None)
    if not isinstance(error, (ConfigAttributeError, ConfigKeyError)) or not key or key.count(".") != 1:
        return None
    group, name = key.split(".")
    owners = [
        f"{group}={option}"
        for option, schema in OPTION_SCHEMAS.get(group, {}).items()
        if name in {f.name for f in dataclasses.fields(schema)}
    ]
    if not owners:
        return None
    return (
        f"{key} is a key of {' and '.join(owners)} only, not of the {group} option selected: choose "
        f"{' or '.join(owners)}, or leave {key} out ({one_line(str(error))})"
    )


@contextlib.contextmanager
def _config_errors_in_one_line() -> Iterator[None]:
    """An override Hydra cannot compose (a wrong type, an unknown key or option) ends like every other
    user error: one line, exit code 2.  Hydra would print several lines and exit 1, so its errors are
    let through to here, unless the user asked for them in full (HYDRA_FULL_ERROR=1)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if os.environ.get("HYDRA_FULL_ERROR"):
        yield
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    except (HydraException, OmegaConfBaseException) as e:
        cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else None
        text = (
            _key_of_another_option(cause)
            or _key_of_an_unselected_option(e, sys.argv[1:])
            or (one_line(str(e)) + (f": {one_line(str(cause))}" if cause is not None else ""))
        )
        _exit_in_one_line(text)
    except (OSError, ValueError) as e:
        if SWEEP.started:
            raise
        # Hydra making the run directory or opening its job log there, before any nfbench code ran.
        reason = e.__cause__ if isinstance(e.__cause__, OSError) else e
        _exit_in_one_line(
            f"cannot set up the run directory: {reason}. Fix: give hydra.run.dir a directory you can "
            f"write (not an existing file)"
        )
    finally:
        del os.environ["HYDRA_FULL_ERROR"]


def _exit_in_one_line(text: str) -> NoReturn:
    print(f"nfbench: error: {text}", file=sys.stderr)
    sys.exit(2)


def _key_of_an_unselected_option(error: Exception, overrides: list[str]) -> Optional[str]:
    """The message for an override like ``logger.csv.file=x`` that Hydra could not apply because its option
    (logger=csv, a registered logger or hook) is not selected; None for any other error."""
    from nfbench.engine.hooks import HOOKS
    from nfbench.loggers import LOGGERS
    from nfbench.registry import Registry

    registries: dict[str, Registry] = {"logger": LOGGERS, "hooks": HOOKS}
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        group, _, rest = key.partition(".")
        option = rest.split(".")[0]
        if group in registries and "." in rest and option in registries[group] and f"'{key}'" in str(error):
            return (
                f"{key} is a key of {group}={option}, which is not selected: select it ({group}={option}, or "
                f"several: {group}=[...,{option}]), or leave {key} out"
            )
    return None


def main(argv: Optional[list[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    register_configs()
    register_help()
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
            from nfbench.analysis.summary import wants_multirun

            # A list of models or schemes is a sweep: run it as one, so one table comes out.
            rest = ["--multirun", *rest] if wants_multirun(rest) else rest
    else:
        print(f"nfbench: unknown command '{cmd}'; choose one of: {', '.join(COMMANDS)}\n", file=sys.stderr)
        print(usage(), file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"nfbench {cmd}", *rest]
    with _config_errors_in_one_line():
        COMMANDS[cmd][0]()
    if SWEEP.invalid:
        print(
            f"nfbench: error: {len(SWEEP.invalid)} of {SWEEP.points} sweep points invalid (their result.json "
            f"says why): {', '.join(SWEEP.invalid)}",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
