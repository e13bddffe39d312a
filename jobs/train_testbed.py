"""`python -m jobs.train_testbed` = `diffrep train_testbed` (diffrep/jobs/train_testbed.py)."""

import sys

from diffrep.jobs.train_testbed import main

if __name__ == "__main__":
    sys.exit(main())
