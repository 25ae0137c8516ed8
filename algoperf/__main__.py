"""`python -m algoperf ...` (also what `torchrun -m algoperf run ...` executes)."""

import sys

from algoperf.cli import main

sys.exit(main())
