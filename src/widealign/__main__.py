"""``python -m widealign`` runs the command-line tool."""

import sys

from widealign.cli.main import main

sys.exit(main())
