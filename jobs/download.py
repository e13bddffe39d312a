"""`python -m jobs.download` = `diffrep download` (diffrep/jobs/download.py)."""

import sys

from diffrep.jobs.download import main

if __name__ == "__main__":
    sys.exit(main())
