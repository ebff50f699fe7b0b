"""``hydra/launcher=packed``: nfbench's launcher that trains several jobs of a sweep in one process
(nfbench/engine/pack.py).  Hydra finds it as it finds every launcher, in the ``hydra_plugins``
namespace package (no ``__init__.py`` there: other plugins share the name); its config schema is
registered by :mod:`.config`, and conf/hydra/launcher/packed.yaml is the preset users select."""
