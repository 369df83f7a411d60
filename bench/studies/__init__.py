"""The accuracy studies: each a module run as ``python -m bench.studies.NAME``, each a stage of ``bench/dvc.yaml``
whose options are its entry in ``bench/params.yaml``, each writing ``bench/results/<name>.json``."""
