"""The packed launcher: the jobs of a sweep that may share a pack (:func:`nfbench.engine.pack.pack_key`)
are trained K at a time in this process (:func:`nfbench.engine.pack.train_pack`); every other job is
launched as Hydra's basic launcher launches it, one after the other.

Each job of a pack is set up as Hydra sets up a job (``run_job``): its output directory, its ``.hydra/``
files, the callbacks' ``on_job_start`` and ``on_job_end``, its ``hydra.job.env_set`` (while it is set up
and scored; the pack trains in one environment) and a :class:`hydra.core.utils.JobReturn` with the value
of ``nfbench train``'s task function.  Only ``nfbench train``'s jobs are packed.  nfbench is imported
when the launcher launches, so that Hydra's scan of its plugins stays fast.
"""

# No `from __future__ import annotations`: Hydra runs this module before it is in sys.modules, where
# dataclasses would look string annotations up.
import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, env_override, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)


@dataclass
class PackedJob:
    """A job of a pack under way: its config (Hydra's included), the task's config, its JobReturn, and the
    run it trains (None once refused or failed) and how that ended."""

    config: DictConfig
    task_cfg: DictConfig
    ret: JobReturn
    start: Optional[Any] = None
    outcome: Optional[Any] = None

    @property
    def output_dir(self) -> Path:
        return Path(self.config.hydra.runtime.output_dir)


class PackedLauncher(Launcher):
    def __init__(self, runs_per_process: int = 4) -> None:
        if runs_per_process < 1:
            raise ValueError(f"hydra.launcher.runs_per_process={runs_per_process}: must be >= 1 (1: every job alone)")
        self.runs_per_process = runs_per_process
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from nfbench.cli.main import trains
        from nfbench.engine.pack import plan_packs

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = [self._job_config(overrides, initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
        keys = [self._key(config) if trains(self.task_function) else (None, "not nfbench train") for config in configs]
        packs = plan_packs([key for key, _ in keys], self.runs_per_process)
        log.info(
            "Launching %d jobs: %d pack(s) of several in one process, the rest alone",
            len(configs),
            sum(len(p) > 1 for p in packs),
        )
        returns: dict[int, JobReturn] = {}
        for pack in packs:
            for i in pack:
                why = f" (alone: {keys[i][1]})" if keys[i][0] is None else ""
                log.info("\t#%d : %s%s", initial_job_idx + i, " ".join(filter_overrides(job_overrides[i])), why)
            if len(pack) == 1:
                returns[pack[0]] = run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=configs[pack[0]],
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            else:
                returns.update(zip(pack, self._run_pack([configs[i] for i in pack])))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[i] for i in range(len(configs))]

    def _job_config(self, overrides: Sequence[str], idx: int) -> DictConfig:
        """The job's config as run_job would see it, its output directory set (sweep.dir/sweep.subdir)."""
        assert self.hydra_context is not None and self.config is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        HydraConfig.instance().set_config(config)  # the subdir names the job by its number and overrides
        output_dir = os.path.join(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = os.path.abspath(output_dir)
        return config

    def _key(self, config: DictConfig) -> tuple[Optional[str], str]:
        from nfbench.engine.pack import pack_key

        HydraConfig.instance().set_config(config)  # ${hydra:...} resolves as in the job
        if config.hydra.job.chdir:
            return None, "hydra.job.chdir=true (a pack's runs share one working directory)"
        try:
            return pack_key(config)
        except Exception as e:  # noqa: BLE001 - the job alone will report it as it always does
            return None, f"its config does not resolve here ({type(e).__name__})"

    def _run_pack(self, configs: list[DictConfig]) -> list[JobReturn]:
        from nfbench.engine.pack import train_pack

        orig_hydra_cfg = HydraConfig.instance().cfg
        jobs = [self._begin(config) for config in configs]
        ready = [job for job in jobs if job.start is not None]
        if ready:
            self._console_log(ready[0].config)
            outcomes = train_pack(
                [job.start for job in ready], [f"#{job.config.hydra.job.num}" for job in ready], job_logs=True
            )
            for job, outcome in zip(ready, outcomes):
                job.outcome = outcome
        for job in jobs:
            self._end(job)
        HydraConfig.instance().cfg = orig_hydra_cfg
        return [job.ret for job in jobs]

    def _console_log(self, config: DictConfig) -> None:
        """The job logging of the task (its console format and filters) for the pack; each run's job log is
        the pack's to write (nfbench.engine.pack.RunLogs), so the job-log files it opened are closed."""
        configure_log(config.hydra.job_logging, config.hydra.verbose)
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()

    @contextlib.contextmanager
    def _job_scope(self, job: PackedJob) -> Iterator[None]:
        """While a job is set up or scored: Hydra's config, environment and the job's own log file."""
        from nfbench import rundir

        HydraConfig.instance().set_config(job.config)
        handler = rundir.job_log_handler(job.output_dir)
        logging.getLogger().addHandler(handler)
        try:
            with env_override(OmegaConf.to_container(job.config.hydra.job.env_set)):  # type: ignore[arg-type]
                yield
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()

    def _begin(self, config: DictConfig) -> PackedJob:
        """run_job up to the task: the job's directory and .hydra/ files, on_job_start, and nfbench train's
        checks (:func:`nfbench.cli.main.prepare_packed_job`)."""
        from nfbench.cli.main import prepare_packed_job

        assert self.hydra_context is not None
        HydraConfig.instance().set_config(config)
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        ret = JobReturn(
            overrides=OmegaConf.to_container(config.hydra.overrides.task),
            cfg=task_cfg,  # type: ignore
            hydra_cfg=copy.deepcopy(HydraConfig.instance().cfg),
            working_dir=os.getcwd(),
            task_name=config.hydra.job.name,
        )
        job = PackedJob(config, task_cfg, ret)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        if config.hydra.output_subdir is not None:
            hydra_output = job.output_dir / str(config.hydra.output_subdir)
            hydra_output.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(task_cfg, hydra_output / "config.yaml")
            OmegaConf.save(ret.hydra_cfg, hydra_output / "hydra.yaml")
            OmegaConf.save(config.hydra.overrides.task, hydra_output / "overrides.yaml")
        with self._job_scope(job):
            self.hydra_context.callbacks.on_job_start(config=config, task_function=self.task_function)
            try:
                job.start = prepare_packed_job(task_cfg)
            except Exception as e:  # noqa: BLE001 - as run_job: the job failed, the sweep goes on
                ret.return_value, ret.status = e, JobStatus.FAILED
        return job

    def _end(self, job: PackedJob) -> None:
        """run_job after the task: the job's value (:func:`nfbench.cli.main.score_packed_job`), on_job_end."""
        from nfbench.cli.main import score_packed_job

        assert self.hydra_context is not None
        with self._job_scope(job):
            if job.ret.status != JobStatus.FAILED:
                try:
                    job.ret.return_value = score_packed_job(job.task_cfg, job.outcome)
                    job.ret.status = JobStatus.COMPLETED
                except Exception as e:  # noqa: BLE001
                    job.ret.return_value, job.ret.status = e, JobStatus.FAILED
            self.hydra_context.callbacks.on_job_end(config=job.config, job_return=job.ret)
