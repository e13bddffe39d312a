"""Relative paths in a job's config, made absolute in the driver before any work.

Ray workers run in their own working directory, so a relative `root` or `input` would be
read and written somewhere else than the user meant; the runner resolves them against the
directory the job was started from. Under `ray job submit --working-dir`, that directory is
Ray's temporary copy of the user's: a relative output path would vanish with it, so it is
an error that says what to set.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from diffrep.config import ConfigError

# outputs: a relative one is lost under `ray job submit`
OUTPUT_KEYS = frozenset({"root", "out", "out_dir", "output_folder"})
# inputs resolved whenever relative (a brace pattern or glob is resolved as text)
INPUT_KEYS = frozenset({"input", "folder", "images", "queries", "queries_metadata",
                        "generated", "url_list", "captions", "labels", "testbed", "memorizing"})
# resolved only when not one of the key's special values
SPECIAL_VALUES = {"prompts": {"training"}, "dedup_groups": {"auto"}}
# resolved only when the relative path exists here (else it names a hub model)
LOCAL_IF_EXISTS = frozenset({"checkpoint", "checkpoints"})


def submitted_working_dir() -> str | None:
    """Ray's copy of the working directory when this driver runs under `ray job submit
    --working-dir`, else None."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (json.JSONDecodeError, AttributeError):
        return None
    return os.getcwd() if runtime_env.get("working_dir") else None


def _relative_local(value: Any) -> bool:
    return isinstance(value, str) and value != "" and "://" not in value and not os.path.isabs(value)


def absolute_paths(cfg: Any, section: str) -> Any:
    """`cfg` with every relative local path made absolute (see the module doc); raises
    ConfigError for a relative output path under `ray job submit`."""
    cwd, submitted = os.getcwd(), submitted_working_dir()
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        name, value = f.name, getattr(cfg, f.name)

        def resolve(v: Any, name: str = name) -> Any:
            if not _relative_local(v) or v in SPECIAL_VALUES.get(name, ()):
                return v
            if name in LOCAL_IF_EXISTS and not os.path.exists(v):
                return v
            if submitted and name in OUTPUT_KEYS:
                raise ConfigError(
                    f"{section}.{name} {v!r} is relative: under `ray job submit` the job runs "
                    f"in Ray's temporary copy of the working directory ({submitted}), where "
                    f"outputs are lost; set {section}.{name} to an absolute path that every "
                    f"node shares, or a URL (s3://...)")
            return os.path.join(cwd, v)

        if name in OUTPUT_KEYS | INPUT_KEYS | LOCAL_IF_EXISTS | set(SPECIAL_VALUES):
            new = [resolve(v) for v in value] if isinstance(value, list) else resolve(value)
            if new != value:
                changes[name] = new
    return dataclasses.replace(cfg, **changes) if changes else cfg
