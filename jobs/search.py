"""`python -m jobs.search` = `diffrep search` (diffrep/jobs/search.py)."""

import sys

from diffrep.jobs.search import main

if __name__ == "__main__":
    sys.exit(main())
