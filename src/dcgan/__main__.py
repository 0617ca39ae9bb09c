"""``python -m dcgan train|generate|evaluate [overrides]``: the console scripts, from any directory."""

from __future__ import annotations

import sys

USAGE = "usage: python -m dcgan {train,generate,evaluate,visualize} [key=value ...]   (see dcgan-train --help)"


def main() -> None:
    from dcgan.platform import cli

    tasks = {"train": cli.main, "generate": cli.generate_main, "evaluate": cli.evaluate_main,
             "visualize": cli.visualize_main}  # fmt: skip
    if len(sys.argv) < 2 or sys.argv[1] not in tasks:
        given = f"got {sys.argv[1]!r}" if len(sys.argv) > 1 else "no task given"
        sys.exit(f"{USAGE}\n{given}: expected one of {', '.join(tasks)}.")
    task = sys.argv.pop(1)
    sys.argv[0] = f"python -m dcgan {task}"
    tasks[task]()


if __name__ == "__main__":
    main()
