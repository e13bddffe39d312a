"""`python -m jobs.shards` = `diffrep shards` (diffrep/jobs/shards.py)."""

import sys

from diffrep.jobs.shards import main

if __name__ == "__main__":
    sys.exit(main())
