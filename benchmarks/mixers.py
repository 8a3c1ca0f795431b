"""Mixer benchmark; same as ``linearlab bench mixers`` (see ``--help``)."""

import sys

from linearlab.bench.mixers import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
