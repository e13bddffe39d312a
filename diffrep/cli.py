"""The `diffrep` command: `diffrep <job> --config FILE [--key value ...]`.

Runs from any directory (relative paths in a config are relative to the current one).
`diffrep --help` lists the jobs; `diffrep <job> --help` lists the job's config keys.
"""

from __future__ import annotations

import importlib
import sys

from diffrep.jobs import JOBS

USAGE = "usage: diffrep <job> [--config FILE] [--key value ...] [--debug]  (diffrep <job> --help)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, JOBS))
        print(USAGE + "\n\njobs:")
        for name, what in JOBS.items():
            print(f"  {name:<{width}}  {what}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in JOBS:
        import difflib

        near = difflib.get_close_matches(name, list(JOBS), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        print(f"diffrep: unknown job {name!r}; {hint}jobs: {', '.join(JOBS)}", file=sys.stderr)
        return 2
    job = importlib.import_module(f"diffrep.jobs.{name}").JOB
    return job.main(rest)


if __name__ == "__main__":
    sys.exit(main())
