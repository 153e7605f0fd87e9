"""The earlier name of :mod:`kneeseg.execution` (precision policy, runtimes, inferers, loader settings,
learning-rate schedules): bundle configs of version 0.4.2 and before name ``kneeseg.engines.*``."""

from kneeseg.execution import *  # noqa: F401,F403
from kneeseg.execution import __all__, __getattr__  # noqa: F401
