"""`python -m gemma_cpp.cli ...` is `gemma-cpp ...`."""

import sys

from . import main

sys.exit(main())
