"""`python -m jobs.dedup` = `diffrep dedup` (diffrep/jobs/dedup.py)."""

import sys

from diffrep.jobs.dedup import main

if __name__ == "__main__":
    sys.exit(main())
