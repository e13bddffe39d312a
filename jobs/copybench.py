"""`python -m jobs.copybench` = `diffrep copybench` (diffrep/jobs/copybench.py)."""

import sys

from diffrep.jobs.copybench import main

if __name__ == "__main__":
    sys.exit(main())
