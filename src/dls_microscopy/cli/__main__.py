"""``python -m dls_microscopy.cli``: the same as the ``dls-microscopy`` console script."""

import sys

from dls_microscopy.cli import main

sys.exit(main())
