"""What the benchmarks share: machine records, timing, result files, prepared HC18 images (``common``), and the
kept work folder of the studies that train heads on the real HC18 sample (``workspace``). No benchmark imports
another; what two of them need lives here."""
