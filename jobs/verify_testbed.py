"""`python -m jobs.verify_testbed` = `diffrep verify_testbed` (diffrep/jobs/verify_testbed.py)."""

import sys

from diffrep.jobs.verify_testbed import main

if __name__ == "__main__":
    sys.exit(main())
