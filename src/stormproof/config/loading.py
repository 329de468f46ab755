"""Reading ``stormproof.yaml``: the YAML (no duplicate keys, one document), the model, the
``STORMPROOF_*`` environment overrides, and pydantic's errors worded with file and line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from stormproof.config.executors import (
    AwsConfig,
    DaskConfig,
    DaskLocalConfig,
    DaskPoolConfig,
    SlurmConfig,
)
from stormproof.config.fields import (
    CONFIG_FILE_NAME,
    ENV_EXECUTOR,
    ENV_HOME,
    ENV_MAX_PARALLEL,
    ENV_STORE,
    EXAMPLES,
    suggestion,
)
from stormproof.config.model import (
    LEASE_DOES_NOTHING,
    Config,
    expiring_lease,
)
from stormproof.config.places import line_of, render_messages, setting_path
from stormproof.config.sections import (
    AlertConfig,
    BreakerConfig,
    FleetConfig,
    PolicyConfig,
    PoolConfig,
)
from stormproof.errors import ConfigError, InputRefused
from stormproof.spec.pydantic_errors import RANGE_WORDS


def load_config(path: Path | None, cwd: Path, environ: Mapping[str, str]) -> Config:
    """Read ``path`` (or ``cwd/stormproof.yaml`` if it exists), apply ``STORMPROOF_*`` overrides.

    ``environ`` is passed in rather than read from ``os.environ`` so that
    tests and embedding programs decide what the environment is.
    """
    if path is not None:
        file = path if path.is_absolute() else cwd / path
        shown = str(path)
        if not file.exists():  # a device or a pipe is refused by the reader, saying what it is
            raise ConfigError(
                f"{shown}: no such configuration file (give an existing file to --config, "
                f"or leave it out to use ./{CONFIG_FILE_NAME} or the defaults)"
            )
    else:
        file = cwd / CONFIG_FILE_NAME
        shown = CONFIG_FILE_NAME
        if not file.is_file():
            return _with_env(Config(), environ)
    config = _parse_file(file, shown, environ)
    config._source = file
    return _with_env(config, environ)


def _parse_file(file: Path, shown: str, environ: Mapping[str, str]) -> Config:
    from stormproof.limits import CONFIG_MAX_BYTES, active_limits, read_bounded, yaml_tree_problems

    try:
        raw = read_bounded(file, "configuration file", CONFIG_MAX_BYTES, raise_hint=False)
        text = raw.decode("utf-8")
    except InputRefused as err:
        raise ConfigError(f"{shown}: {err.messages[0]}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{shown}: cannot read it: {err}") from None
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        limits = yaml_tree_problems(root, active_limits()) if root is not None else []
        if limits:
            raise ConfigError(render_messages(shown, [f":{line}: {text}" for line, text in limits]))
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as err:
        raise ConfigError(f"{shown}{_yaml_problem(err)}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{shown}: not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{shown}: the document is nested too deeply") from None
    finally:
        loader.dispose()
    if data is None:
        return Config()
    if not isinstance(data, dict):
        raise ConfigError(
            f"{shown}: expected settings like `executor: local` at the top level, got {_kind(data)}"
        )
    # the executor the environment will choose decides which pool checks apply
    context = {"executor": environ.get(ENV_EXECUTOR, "").strip()}
    try:
        config = Config.model_validate(data, context=context)
    except ValidationError as err:
        messages = [_message(e, root) for e in err.errors()]
        raise ConfigError(render_messages(shown, messages)) from None
    config._root, config._shown = root, shown
    return config


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false are booleans.

    YAML 1.1 also reads ``on``, ``off``, ``yes``, ``no`` as booleans, which
    would turn the alert rule ``{on: workflow_failed}`` into ``{True: ...}``.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def _yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """``:line:col: not valid YAML: problem (context at line N)``."""
    mark = err.problem_mark or err.context_mark
    where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    message = f"{where}: not valid YAML: {err.problem or err.context or 'cannot parse it'}"
    context = err.context_mark
    if err.problem and err.context and context is not None and context is not mark:
        message += f" ({err.context} at line {context.line + 1})"
    return message


def _with_env(config: Config, environ: Mapping[str, str]) -> Config:
    update: dict[str, Any] = {}
    for var, field in ((ENV_EXECUTOR, "executor"), (ENV_STORE, "store"), (ENV_HOME, "home")):
        value = environ.get(var, "").strip()
        if value:
            update[field] = value
    raw = environ.get(ENV_MAX_PARALLEL, "").strip()
    if raw:
        try:
            max_parallel = int(raw)
        except ValueError:
            max_parallel = 0
        if max_parallel < 1:
            raise ConfigError(
                f"{ENV_MAX_PARALLEL}={raw!r}: expected a whole number of at least 1, like 8 "
                f"(or unset it)"
            )
        update["policy"] = config.policy.model_copy(update={"max_parallel": max_parallel})
    if not update:
        return config
    if config.lease is not None and not expiring_lease(update.get("store", config.store)):
        where = f"{config.source}: " if config.source is not None else ""
        raise ConfigError(f"{where}lease: " + LEASE_DOES_NOTHING.format(update["store"]))
    result = config.model_copy(update=update)
    result._source = config._source
    result._root, result._shown = config._root, config._shown
    return result


# --- error messages ----------------------------------------------------------------------

_FIELDS: dict[tuple[str, ...], tuple[str, ...]] = {
    (): tuple(Config.model_fields),
    ("pools",): tuple(PoolConfig.model_fields),
    ("policy",): tuple(PolicyConfig.model_fields),
    ("policy", "breaker"): tuple(BreakerConfig.model_fields),
    ("fleet",): tuple(FleetConfig.model_fields),
    ("slurm",): tuple(SlurmConfig.model_fields),
    ("alerts",): tuple(AlertConfig.model_fields),
    ("aws",): tuple(AwsConfig.model_fields),
    ("dask",): tuple(DaskConfig.model_fields),
    ("dask", "local"): tuple(DaskLocalConfig.model_fields),
    ("dask", "pools", "*"): tuple(DaskPoolConfig.model_fields),  # * : any pool's name
}


def _message(error: Any, root: yaml.Node | None) -> str:
    loc: tuple[int | str, ...] = tuple(error["loc"])
    line = line_of(root, loc)
    where = f":{line}: " if line else ": "
    place = setting_path(loc)
    return f"{where}{place + ': ' if place else ''}{_explain(error, loc)}"


def _explain(error: Any, loc: tuple[int | str, ...]) -> str:
    kind: str = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    field = str(loc[-1]) if loc else ""
    if kind == "extra_forbidden":
        parent = tuple(p for p in loc[:-1] if isinstance(p, str))
        known = _FIELDS.get(parent) or _FIELDS.get((*parent[:-1], "*"), ())
        hint = suggestion(field, known) or f" (known fields: {', '.join(known)})"
        return f"unknown field{hint}"
    if kind == "missing":
        example = EXAMPLES.get(field)
        return "required field is missing" + (f": give {example}" if example else "")
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in RANGE_WORDS:
        key, phrase = RANGE_WORDS[kind]
        bound = ctx.get(key)
        bound = f"{bound:g}" if isinstance(bound, (int, float)) else bound
        example = EXAMPLES.get(field)
        return f"{phrase} {bound}, got {value!r}" + (f" ({example})" if example else "")
    if kind == "string_pattern_mismatch":
        return (
            f"{value!r} is not a safe name: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (at most 64 characters)"
        )
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"expected a whole number, got {value!r}"
    if kind in ("float_parsing", "float_type"):
        return f"expected a number, got {value!r}"
    if kind in ("string_type", "string_too_short"):
        return f"expected a non-empty text value, got {value!r}"
    if kind == "list_type":
        return f"expected a list (lines starting with '- '), got {_kind(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of settings (key: value), got {_kind(value)}"
    return str(error["msg"])


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)
