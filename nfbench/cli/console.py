"""The ``nfbench`` console script: :func:`nfbench.cli.main.main`, with Ctrl-C during its imports (Hydra, torch)
ending in one line instead of a traceback.  Kept free of heavy imports so that it is in place at once."""

from __future__ import annotations

import signal
import sys


def main() -> None:
    try:
        from nfbench.cli.main import INTERRUPTED
        from nfbench.cli.main import main as cli_main
    except KeyboardInterrupt:
        print("nfbench: error: interrupted by SIGINT (Ctrl-C) while starting; nothing was run", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    try:
        cli_main()
    except KeyboardInterrupt:  # outside any Hydra command (a run's own SIGINT ends in its task)
        print(f"nfbench: error: {INTERRUPTED}", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)


if __name__ == "__main__":
    main()
