"""``python -m dls_microscopy``: the same as the ``dls-microscopy`` console script."""

import sys

from dls_microscopy.cli import main

if __name__ == "__main__":
    sys.exit(main())
