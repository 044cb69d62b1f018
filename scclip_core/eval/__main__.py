"""Entry point for `python -m scclip_core.eval` and `torchrun ... -m scclip_core.eval`."""

import sys

from .cli import main

sys.exit(main())
