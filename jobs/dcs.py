"""`python -m jobs.dcs` = `diffrep dcs` (diffrep/jobs/dcs.py)."""

import sys

from diffrep.jobs.dcs import main

if __name__ == "__main__":
    sys.exit(main())
