"""brats-medsam command line. ``python main.py --help`` lists the verbs."""

import sys

from bratsmedsam.cli import main

if __name__ == "__main__":
    sys.exit(main())
