"""LogRL real-time detection service: ``python -m serving --help``."""

import sys

from serving.cli import main

sys.exit(main())
