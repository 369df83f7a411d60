"""Run timing benchmarks, from the repository root:

    python -m bench.timings --list                  # every benchmark and its question
    python -m bench.timings encode --help           # one benchmark's options
    python -m bench.timings encode --repeats 3      # one benchmark, in this process
    python -m bench.timings storage tightness       # several in turn, each in a process of its own
    python -m bench.timings --all --threads 2       # every one in turn (options after the names go to each)

Each writes ``bench/results/<name>.json``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

from bench.timings import names, question

PROG = "python -m bench.timings"


def usage() -> str:
    return f"{__doc__}\nbenchmarks: {', '.join(names())}\n"


def listing() -> str:
    width = max(map(len, names()))
    return "\n".join(f"{name:<{width}}  {question(name)}" for name in names()) + "\n"


def run_one(name: str, options: list[str]) -> None:
    """``name``'s ``main`` in this process, with ``options`` as its command line."""
    sys.argv = [f"{PROG} {name}", *options]  # its parser's usage line and its workers' command line
    importlib.import_module(f"bench.timings.{name}").main()


def main() -> None:
    argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return
    if argv[0] == "--list":
        sys.stdout.write(listing())
        return
    if argv[0] == "--all":
        chosen, rest = names(), argv[1:]
    else:
        count = next((i for i, arg in enumerate(argv) if arg.startswith("-")), len(argv))
        chosen, rest = argv[:count], argv[count:]
    unknown = [name for name in chosen if name not in names()]
    if unknown or not chosen:
        said = f"no benchmark {', '.join(unknown)}" if unknown else "name a benchmark (or --all)"
        sys.exit(f"{PROG}: {said}; one of {', '.join(names())} (--list says what each does)")
    if len(chosen) == 1:
        run_one(chosen[0], rest)
        return
    for name in chosen:  # each in a process of its own: the CPU code paths are read once, when torch loads
        print(f"{PROG} {name} {' '.join(rest)}".rstrip(), flush=True)
        done = subprocess.run([sys.executable, "-m", "bench.timings", name, *rest])
        if done.returncode:
            sys.exit(f"{PROG} {name} failed (exit {done.returncode}); the benchmarks after it did not run")


if __name__ == "__main__":
    main()
