"""Op benchmark; same as ``linearlab bench ops`` (see ``--help``)."""

import sys

from linearlab.bench.ops import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
