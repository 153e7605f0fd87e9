"""``python -m kneeseg.monailabel prepare|serve`` (see :mod:`kneeseg.monailabel`)."""

import sys

from kneeseg.monailabel.cli import main

sys.exit(main())
