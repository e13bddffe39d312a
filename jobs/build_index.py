"""`python -m jobs.build_index` = `diffrep build_index` (diffrep/jobs/build_index.py)."""

import sys

from diffrep.jobs.build_index import main

if __name__ == "__main__":
    sys.exit(main())
