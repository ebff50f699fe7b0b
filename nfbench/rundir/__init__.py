"""The run directory: what it holds and how it is written (``files``), its checkpoints and weights
(``checkpoints``), who owns it (``lock``), what a resume may change and continues (``resume``), what
produced it (``environment``), and a trained network back from it (``load``).

The names below are the package's interface: code outside it calls ``rundir.NAME`` (so a test that
patches ``rundir.save_checkpoint`` patches what training calls).  ``load`` is not among them: it needs
the models and data sets.
"""

from nfbench.rundir.checkpoints import (
    CHECKPOINT_VERSION,
    CorruptCheckpointError,
    UnverifiedFileError,
    checksum_path,
    find_checkpoint,
    kept_checkpoint,
    load_checkpoint,
    save_best,
    save_checkpoint,
    save_weights,
    verify_weights,
    write_with_checksum,
)
from nfbench.rundir.environment import environment
from nfbench.rundir.files import (
    BEST,
    CHECKPOINTS,
    LAST,
    LOCK,
    LOG,
    RUN_FILES,
    WEIGHTS,
    atomic_write_bytes,
    flatten,
    job_log_handler,
    log_to_file,
    read_config,
    read_json,
    read_metrics,
    refuse_to_start_over,
    remove_stale_temporaries,
    strict_json,
    write_json,
    write_metrics,
    write_result,
    writing,
)
from nfbench.rundir.lock import RunDirInUseError, RunDirLock
from nfbench.rundir.resume import (
    RESUME_SAFE,
    branched_from,
    check_data,
    check_resume,
    config_changes,
    load_resume_state,
    reconcile_history,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "CorruptCheckpointError",
    "UnverifiedFileError",
    "checksum_path",
    "find_checkpoint",
    "kept_checkpoint",
    "load_checkpoint",
    "save_best",
    "save_checkpoint",
    "save_weights",
    "verify_weights",
    "write_with_checksum",
    "environment",
    "BEST",
    "CHECKPOINTS",
    "LAST",
    "LOCK",
    "LOG",
    "RUN_FILES",
    "WEIGHTS",
    "atomic_write_bytes",
    "flatten",
    "job_log_handler",
    "log_to_file",
    "read_config",
    "read_json",
    "read_metrics",
    "refuse_to_start_over",
    "remove_stale_temporaries",
    "strict_json",
    "write_json",
    "write_metrics",
    "write_result",
    "writing",
    "RunDirInUseError",
    "RunDirLock",
    "RESUME_SAFE",
    "branched_from",
    "check_data",
    "check_resume",
    "config_changes",
    "load_resume_state",
    "reconcile_history",
]
