"""``python -m gentool`` and the ``gentool`` console script.

Ctrl-C while the command line is still importing (torch takes a second) exits
quietly with 130, the shell's code for SIGINT, instead of a traceback.
"""

import os
import sys


def main() -> None:
    try:
        from gentool.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        if os.environ.get("GENTOOL_DEBUG"):
            raise
        sys.stderr.write("\n")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
