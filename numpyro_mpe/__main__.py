"""``python -m numpyro_mpe``: the command line (:mod:`numpyro_mpe.tools.cli`)."""

import sys

from numpyro_mpe.tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
