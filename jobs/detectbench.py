"""`python -m jobs.detectbench` = `diffrep detectbench` (diffrep/jobs/detectbench.py)."""

import sys

from diffrep.jobs.detectbench import main

if __name__ == "__main__":
    sys.exit(main())
