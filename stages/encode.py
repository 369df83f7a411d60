"""encode@<dataset>: run a backbone's image encoder once per prepared image into a sharded Zarr store.

Resumable (finished shards are kept) and splittable: ``--part-id/--num-parts``, or torchrun's RANK and
WORLD_SIZE, give each process a disjoint set of shards of the same store (``autoprompt.encoding``).
"""

from __future__ import annotations

from pathlib import Path

from autoprompt.console import run
from autoprompt.device import pin_cpu_numerics
from autoprompt.encode.store import encode_prepared, part_from_env
from autoprompt.settings import load_settings
from stages import parser


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__)
    args.add_argument("--dataset", required=True)
    args.add_argument("--store", type=Path, required=True, help="prepared Zarr store")
    args.add_argument("--out", type=Path, required=True, help="embedding Zarr store to write")
    args.add_argument("--part-id", type=int, default=None)
    args.add_argument("--num-parts", type=int, default=None)
    args = args.parse_args(argv)
    encode = load_settings(args.params).encode
    pin_cpu_numerics(encode.threads)
    encode_prepared(args.store, args.out, encode, args.dataset, part_from_env(args.part_id, args.num_parts))


if __name__ == "__main__":
    run(main)
