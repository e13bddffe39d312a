"""Typed job configs: YAML file + single-key command-line overrides.

A config file holds the shared `root` (output root) and one section per job:

    root: data/demo/out
    embed:
      input: data/demo/corpus/shards/{00000..00003}.tar
      models: [sscd_onnx]

`load_job_config(EmbedConfig, "embed", argv)` merges, in increasing precedence, the
dataclass defaults, the file's top-level keys that the job knows (`root`), its section,
and `--key value` overrides (values parsed as YAML: `--models "[sscd_onnx, clip:ViT-B-32]"`).
Unknown keys are errors naming the nearest known key. `--help` lists every key with its
default and meaning.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class InputError(Exception):
    """Bad input the user must fix (a config value, a checkpoint, an index file): the job
    exits 2 with the message, which names what is wrong and the fix."""


class ConfigError(InputError, ValueError):
    """A config value is missing or wrong; the message names the key and the fix."""


# Every job's config section; a config file's other top-level mappings are errors (a typo
# in a section name would otherwise run the job silently with its defaults).
JOB_SECTIONS = ("build_demo", "build_testbed_corpus", "copybench", "dcs", "dedup",
                "detectbench", "download", "embed", "index", "scan", "search", "serve", "shards",
                "train_testbed", "verify_testbed")
# Top-level keys shared by the jobs; a job takes those its config class has.
SHARED_KEYS = ("root", "ray_address")


def helps(text: str) -> dict[str, str]:
    """Field metadata carrying a config key's help text (shown by --help)."""
    return {"help": text}


def run_name_problem(section: str, name: str) -> str | None:
    """Why `name` cannot be a run name (an output folder), or None when it can."""
    import re

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        return None
    return (f"{section}.run {name!r} must be a path-safe name (letters, digits, . _ -), "
            f"starting with a letter or digit")


def check_resumed_settings(url: str, settings: dict, section: str, run: str) -> None:
    """A run records the settings it started with at `url`; a resumed run must have the
    same ones (outputs made with others would be mixed in). Raises ConfigError naming the
    keys that differ, else (re)writes the record."""
    import json

    from diffrep import storage

    settings = json.loads(json.dumps(settings))  # as the record holds them: tuples are lists
    if storage.exists(url):
        started = storage.read_json(url)
        changed = sorted(k for k in settings if started.get(k) != settings[k])
        if changed:
            raise ConfigError(f"{section} run {run!r} was started with other settings "
                              f"({', '.join(changed)} differ, see {url}): use a new "
                              f"{section}.run name, or overwrite: true")
    storage.write_json(url, settings)


@dataclasses.dataclass(kw_only=True)
class RunSettings:
    """Run control that every Ray job shares: one definition, one name per setting. A
    job's config class inherits it (its own keys come first in --help)."""

    root: str = dataclasses.field(default="out", metadata=helps(
        "output root (local path or fsspec URL) that the jobs of one corpus share"))
    overwrite: bool = dataclasses.field(default=False, metadata=helps(
        "discard this job's finished outputs and recompute them"))
    max_attempts: int = dataclasses.field(default=3, metadata=helps(
        "tries per work unit (shard, slice, task) before it is reported failed (actor or "
        "node deaths included)"))
    progress_interval_s: float = dataclasses.field(default=10.0, metadata=helps(
        "seconds between progress lines"))
    stall_warning_s: float = dataclasses.field(default=60.0, metadata=helps(
        "seconds without progress, while units are pending, before the job logs why (the "
        "pending resource demand); it only explains, it stops nothing"))
    ray_address: str | None = dataclasses.field(default=None, metadata=helps(
        "Ray cluster address; null: $RAY_ADDRESS, else start a local Ray"))


def renamed_keys(cls: type) -> dict[str, str]:
    """{old name: new name} of a config class's renamed keys (its `RENAMED` class
    attribute); old names are accepted with a deprecation warning."""
    return dict(getattr(cls, "RENAMED", {}))


def _apply_renames(cls: type, values: dict[str, Any], section: str, where: str) -> dict[str, Any]:
    renamed = renamed_keys(cls)
    out = dict(values)
    for old, new in renamed.items():
        if old in out:
            if new in out:
                raise ConfigError(f"{where}{old} and {new} are the same setting ({old} is its old "
                                  f"name); keep {new} only")
            logging.getLogger("diffrep").warning(
                "%s%s is deprecated: it is now %s.%s", where, old, section, new)
            out[new] = out.pop(old)
    return out


def field_help(cls: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


def build_parser(cls: type, prog: str, description: str) -> argparse.ArgumentParser:
    # allow_abbrev=False: `--guidance 12` must not silently set `guidance_scale`
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--config", help="YAML config file (its `root` and its job section)")
    parser.add_argument("--debug", action="store_true",
                        help="log debug lines, and a failure's full traceback")
    group = parser.add_argument_group("config keys (override the file; values are YAML)")
    shared = {f.name for f in dataclasses.fields(RunSettings)}
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name in shared):
        default = _default_of(f)
        group.add_argument(
            f"--{f.name}", dest=f.name, default=argparse.SUPPRESS, metavar="VALUE",
            help=f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%"),
        )
    for old in renamed_keys(cls):
        parser.add_argument(f"--{old}", dest=old, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def load_job_config(cls: type[C], section: str, argv: list[str] | None = None,
                    description: str = "", prog: str | None = None) -> C:
    """Parse argv (`--config FILE --key value ...`) into a `cls` instance."""
    parser = build_parser(cls, prog or f"diffrep {section}", description)
    namespace, unknown = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if unknown:
        names = {f.name for f in dataclasses.fields(cls)}
        flags = [u for u in unknown if u.startswith("--")]
        if flags:
            _check_known({flags[0][2:].split("=", 1)[0]: None}, names, "command line: --")
        raise ConfigError(f"command line: unexpected arguments {unknown}; use --key value")
    args = vars(namespace)
    args.pop("debug", None)
    path = args.pop("config", None)
    overrides = {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in args.items()}
    return make_config(cls, section, path, overrides)


def make_config(cls: type[C], section: str, path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> C:
    """Build a `cls` from an optional YAML file's `section` plus overrides."""
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    if path is not None:
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        _check_top_level(doc, path)
        values.update({k: v for k, v in doc.items() if k in names and not isinstance(v, dict)})
        sect = doc.get(section) or {}
        if not isinstance(sect, dict):
            raise ConfigError(f"{path}: section `{section}` must be a mapping")
        sect = _apply_renames(cls, sect, section, f"{path}: {section}.")
        _check_known(sect, names, f"{path}: {section}.")
        values.update(sect)
    overrides = _apply_renames(cls, overrides or {}, section, "command line: --")
    _check_known(overrides, names, "command line: --")
    values.update(overrides)
    missing = [f.name for f in dataclasses.fields(cls)
               if _default_of(f) == "(required)" and f.name not in values]
    if missing:
        raise ConfigError(f"missing config key(s) {missing} for {section}: set them in the "
                          f"`{section}` section or with --{missing[0]} VALUE")
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        _check_type(f"{section}.{key}", value, hints[key])
    return cls(**values)


def _check_top_level(doc: dict, path: str | Path) -> None:
    """A config file holds the shared keys and job sections only."""
    for key, value in doc.items():
        known = JOB_SECTIONS if isinstance(value, dict) else SHARED_KEYS
        if key not in known:
            what = "section" if isinstance(value, dict) else "top-level key"
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known)}"
            if key == "build_index":
                hint = "the build_index job reads the `index` section"
            raise ConfigError(f"{path}: unknown {what} `{key}`; {hint}")


def _check_known(values: dict, names: set[str], where: str) -> None:
    for key in values:
        if key not in names:
            near = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known keys: {sorted(names)}"
            raise ConfigError(f"{where}{key}: unknown config key{hint}")


def _check_type(key: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        raise ConfigError(f"{key} = {value!r} should be {_type_name(hint)}")


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
