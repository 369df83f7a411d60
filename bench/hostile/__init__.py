"""The hostile cases: inputs and faults that each command must refuse in one line (``cases``), run one test per case
by ``python -m pytest bench/hostile``, and as a table into ``bench/results/hostile.json`` by
``python -m bench.hostile``."""
