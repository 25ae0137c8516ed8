"""`python -m scoring ...`: same as `algoperf score ...`."""

import sys

from scoring.cli import main

sys.exit(main(prog='python -m scoring'))
