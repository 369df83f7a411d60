"""The benchmark suite (bench/README.md): timings (``python -m bench.timings``), the accuracy studies
(``dvc repro bench/dvc.yaml``), the hostile cases (``python -m pytest bench/hostile``) and their shared library
(``bench.lib``). Run from the repository root."""
