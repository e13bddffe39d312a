"""`python -m jobs.build_demo` = `diffrep build_demo` (diffrep/jobs/build_demo.py)."""

import sys

from diffrep.jobs.build_demo import main

if __name__ == "__main__":
    sys.exit(main())
