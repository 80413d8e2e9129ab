"""``python -m examples.service``: run the example service (``--help`` for the options)."""

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())
