"""``python -m multidiff`` runs the ``multidiff`` command (see :mod:`multidiff.cli`)."""

import sys

from multidiff.cli import main

sys.exit(main())
