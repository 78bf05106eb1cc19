"""`python -m gemma_cpp ...` is `gemma-cpp ...`."""

import sys

from .cli import main

sys.exit(main())
