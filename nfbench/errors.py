"""Errors a user can act on: each message says what is wrong and how to fix it."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key and the allowed values."""


class DataNotFoundError(FileNotFoundError):
    """A data set that is neither on disk nor downloadable; the message says where it looked."""


class DataError(ValueError):
    """A data file that is there but cannot be read (truncated, empty, another format); the message names it."""


class Preempted(SystemExit):
    """The run caught SIGTERM/SIGINT/SIGUSR1/SIGUSR2, saved a checkpoint and stops; exit code 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


class RunDirectoryError(RuntimeError):
    """A run-directory file that cannot be written (full or read-only disk) or read back (damaged);
    the message names the path and what to do."""


# What a user can fix from a one-line message: the command ends with it (exit 2), a sweep records the point as invalid.
USER_ERRORS = (ConfigError, DataError, DataNotFoundError, RunDirectoryError)
