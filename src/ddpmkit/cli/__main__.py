"""python -m ddpmkit.cli (as torchrun runs it): the `ddpm` command."""

import sys

from . import main

sys.exit(main())
