# Sourced by the GPU scripts (gpu_evidence.sh, gpu_cuda_graph.sh), from the repository root, with PY set:
# makes nfbench importable on a machine where it is not installed and that reaches no package index.
# hydra-core, omegaconf, antlr4 and hydra-joblib-launcher then travel as pure-Python copies in
# .evidence/pydeps (benchmarks/README.md), and nfbench.conf is conf/ through a symlink.
if ! $PY -c "import hydra, omegaconf, hydra_plugins.hydra_joblib_launcher" 2>/dev/null && [ -d .evidence/pydeps ]; then
    export PYTHONPATH="$PWD/.evidence/pydeps${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" $PY -c "import nfbench.conf" 2>/dev/null; then
    ln -sfn ../conf nfbench/conf  # without an install, nfbench.conf is conf/ (pyproject.toml's package-dir)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
