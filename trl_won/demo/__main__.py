"""`python -m trl_won.demo [options]`: the same as `trl-won demo [options]`."""

import sys

from ..cli.main import main


if __name__ == "__main__":
    raise SystemExit(main(["demo", *sys.argv[1:]]))
