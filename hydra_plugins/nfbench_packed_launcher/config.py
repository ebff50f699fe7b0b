"""The schema of ``hydra/launcher=packed`` (registered as ``nfbench_packed``; conf/hydra/launcher/packed.yaml
selects it with nfbench's default)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class PackedLauncherConf:
    _target_: str = "hydra_plugins.nfbench_packed_launcher.packed_launcher.PackedLauncher"
    # Jobs trained together in one process, at most; 1 launches every job alone, one after the other.
    runs_per_process: int = 4


ConfigStore.instance().store(group="hydra/launcher", name="nfbench_packed", node=PackedLauncherConf, provider="nfbench")
