"""`python -m jobs.embed` = `diffrep embed` (diffrep/jobs/embed.py)."""

import sys

from diffrep.jobs.embed import main

if __name__ == "__main__":
    sys.exit(main())
