"""`python -m nextscale.cli …` (and `torchrun … -m nextscale.cli …`)."""

import sys

from nextscale.cli import main

sys.exit(main())
