"""Who owns a run directory: one run at a time, by a lock file that names its holder."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Optional

from nfbench.errors import ConfigError
from nfbench.rundir.files import LOCK

HEARTBEAT_S = 30.0


# A lock from another machine is stale once its heartbeat is this old: ten missed beats, more than
# NFS attribute caching (<= 60 s) and clock skew, and no longer than SLURM takes to declare a node dead.
STALE_AFTER_S = 300.0


def _boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> Optional[str]:
    """The kernel's start time of ``pid`` (clock ticks since boot), telling a reused pid from the holder."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDirInUseError(ConfigError):
    """Another live run holds the run directory."""


class RunDirLock:
    """An exclusive claim on a run directory for a run's lifetime, by a lock file holding its holder.

    Why a hand-made lock file and not ``filelock``'s fcntl/flock: run directories live on the shared
    file systems of SLURM clusters, where flock is not dependable (Lustre mounted ``localflock`` or
    ``noflock`` gives node-local locks or none, silently), and a lock must name its holder for the
    refusal message.  The file is written complete under a unique name and then hard-linked to
    ``.nfbench.lock``: link(2) is atomic and fails if the name exists, on NFS too (the open(2) man
    page's recipe, checking the link count after an ambiguous reply).  It holds host, boot id, pid,
    the pid's start time and the run's start time; a thread refreshes its mtime every
    :data:`HEARTBEAT_S`.  A lock is stale, and taken over, when its holder is on this machine (same
    host and boot) and that process is gone (``kill -9``), or on another machine (or before a reboot)
    and its heartbeat is older than :data:`STALE_AFTER_S` (a failed node).  A lock held by this
    process's parent is the parent's claim for its workers (``trainer.devices=N``): the child
    neither takes nor releases it.
    """

    def __init__(self, run_dir: Path, stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.path = Path(run_dir) / LOCK
        self.stale_after_s, self.heartbeat_s = stale_after_s, heartbeat_s
        self.me = {
            "host": socket.gethostname(),
            "boot_id": _boot_id(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        self.owned = False
        self._stop = threading.Event()
        self._beat: Optional[threading.Thread] = None

    def __enter__(self) -> "RunDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raise :class:`RunDirInUseError` naming a live holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            if self._create():
                self.owned = True
                self._beat = threading.Thread(target=self._heartbeat, name="nfbench-lock-heartbeat", daemon=True)
                self._beat.start()
                return
            holder, age = self._read()
            if holder is None:  # removed meanwhile, or being written by another process right now
                time.sleep(0.2)
                continue
            if holder.get("host") == self.me["host"] and holder.get("pid") == os.getppid():
                return  # our parent's claim: the launcher of trainer.devices=N holds it for its workers
            if not self._stale(holder, age):
                raise RunDirInUseError(self._refusal(holder, age))
            self._take_over(holder)
        raise RunDirInUseError(
            f"could not lock run directory {self.path.parent}: {self.path} keeps changing; "
            "is another run starting there? Use another hydra.run.dir"
        )

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.owned and self._read()[0] == self.me:
            self.path.unlink(missing_ok=True)
        self.owned = False

    def _create(self) -> bool:
        tmp = self.path.with_name(f"{LOCK}.{self.me['host']}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.me))
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:
            return tmp.stat().st_nlink == 2  # NFS: the link may exist although the reply was lost
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> tuple[Optional[dict], float]:
        """The holder and its heartbeat's age in seconds; (None, 0) if there is no readable lock."""
        try:
            age = time.time() - self.path.stat().st_mtime
            return json.loads(self.path.read_text()), age
        except (OSError, ValueError):
            return None, 0.0

    def _stale(self, holder: dict, age: float) -> bool:
        same_machine = holder.get("host") == self.me["host"] and holder.get("boot_id") == self.me["boot_id"]
        if not same_machine:
            return age > self.stale_after_s
        pid = int(holder.get("pid", -1))
        return not _alive(pid) or (holder.get("pid_start") is not None and _process_start(pid) != holder["pid_start"])

    def _take_over(self, stale: dict) -> None:
        """Move the stale lock aside; if another process replaced it meanwhile, put that one back."""
        aside = self.path.with_name(f"{LOCK}.{self.me['host']}.{os.getpid()}.stale")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return
        try:
            if json.loads(aside.read_text()) != stale:
                os.link(aside, self.path)
        except (OSError, ValueError):
            pass
        finally:
            aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def _refusal(self, holder: dict, age: float) -> str:
        where = "this machine" if holder.get("host") == self.me["host"] else f"host {holder.get('host')}"
        return (
            f"run directory {self.path.parent} is in use by another run: pid {holder.get('pid')} on {where}, "
            f"started {holder.get('started')}, heartbeat {age:.0f} s ago (lock file {self.path}); "
            f"give this run another hydra.run.dir (or trainer.run_dir), or wait for that run to end or kill it "
            f"(a lock whose process is dead, or whose heartbeat is older than {self.stale_after_s:.0f} s, is "
            f"taken over)"
        )
