"""`python -m jobs.scan` = `diffrep scan` (diffrep/jobs/scan.py)."""

import sys

from diffrep.jobs.scan import main

if __name__ == "__main__":
    sys.exit(main())
