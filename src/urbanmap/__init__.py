"""urbanmap: urban areas from Landsat on a national grid, for national statistical offices."""

import os

__version__ = "0.1.0"

# OpenMP threads that spin while waiting (libgomp's default) take the cores from everything
# else: torch trains 2 to 8 times slower as soon as another process uses a core, and in
# `mosaic` geomad's kernels starve the thread that reads the next block (measured on the
# default region: 2 CPU-s and 0.5-0.7 s of the stage's 15 s); passive waiting costs little
# on an idle machine. Set here, before any submodule loads torch or geomad (and with them
# OpenMP); an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
