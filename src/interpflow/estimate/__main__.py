"""python -m interpflow.estimate: the estimate's command line (cli.main)."""

import sys

from interpflow.estimate.cli import main

if __name__ == "__main__":
    sys.exit(main())
