"""Command line: ``numpyro-mpe demo`` (or ``python -m numpyro_mpe demo``)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``demo [options]``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "demo":
        print("usage: numpyro-mpe demo [--num-samples N] [--num-warmup N] [--num-chains N]")
        return 2
    from numpyro_mpe.demo import main as demo_main

    demo_main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
