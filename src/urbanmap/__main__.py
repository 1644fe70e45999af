import sys

from urbanmap.cli import main

sys.exit(main())
