"""`python -m aiayn ...`, which is how torchrun starts it: `torchrun --nproc_per_node 2 -m aiayn train ...`."""
import sys

from aiayn.cli import main

sys.exit(main())
