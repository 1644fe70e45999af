"""`python -m urbanmap`: the same entry point as the `urbanmap` command."""

import sys

from urbanmap.cli import main

sys.exit(main())
