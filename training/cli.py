"""`edgellm-gym <command> [options]`: one entry point, one module per command.

Each command lives in its own module with a `main(argv)`, imported only when
called, so `edgellm-gym bench` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "bench": ("training.benchmark", "run every policy on the same seeds; table, CSV/JSON/MD, PNG"),
    "train": ("training.train", "train an SB3 agent on an env"),
    "reproduce": ("training.reproduce", "rerun the seed papers' headline comparisons"),
    "stress": ("training.stress", "fuzz envs with random and invalid actions, check invariants"),
    "perf": ("training.perf", "env steps per second beside CartPole-v1"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items())
    return f"usage: edgellm-gym <command> [options]\n\ncommands:\n{rows}\n\n'edgellm-gym <command> -h' for its options."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"edgellm-gym: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
