"""`python -m jobs.serve` = `diffrep serve` (diffrep/jobs/serve.py)."""

import sys

from diffrep.jobs.serve import main

if __name__ == "__main__":
    sys.exit(main())
