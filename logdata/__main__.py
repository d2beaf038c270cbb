"""Entry point of ``python -m logdata``."""

import sys

from logdata.cli import main

sys.exit(main())
