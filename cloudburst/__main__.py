"""``python -m cloudburst``: the ``cloudburst`` command (see :mod:`cloudburst.cli`)."""

import sys

from cloudburst.cli import main

sys.exit(main())
