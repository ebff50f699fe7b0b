"""The ``nfbench`` command: ``main`` (the commands, Hydra's entry points and one-line errors), ``console``
(the console script), ``refusal`` (a refused run leaves nothing behind), ``help`` (``nfbench train --help``'s
key list) and ``objective`` (the number a Hydra sweeper optimises).

Kept free of imports: the console script is in place before Hydra and torch load.
"""
