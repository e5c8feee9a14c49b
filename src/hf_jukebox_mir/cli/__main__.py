"""`python -m hf_jukebox_mir.cli ...` (used by `accelerate launch -m hf_jukebox_mir.cli extract ...`)."""

import sys

from . import main

sys.exit(main())
