"""`python -m jobs.build_testbed_corpus` = `diffrep build_testbed_corpus` (diffrep/jobs/build_testbed_corpus.py)."""

import sys

from diffrep.jobs.build_testbed_corpus import main

if __name__ == "__main__":
    sys.exit(main())
