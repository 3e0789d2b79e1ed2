"""Reading the user's YAML files, an edge of the core: POOLS.yaml and the operator config, each
read up to a cap, with one clear error per problem (the parsing and validation are the pure
``parse_pools`` and ``PlatformConfig``)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from ridgeline import yamlfile
from ridgeline.errors import format_validation_error, yaml_error_line
from ridgeline.planner.pools import NodePool, PoolsFileError, parse_pools
from ridgeline.platform_config import ConfigError, PlatformConfig


def load_pools(path: Path) -> list[NodePool]:
    try:
        doc = yamlfile.load(yamlfile.read_capped(path, "pools file").decode("utf-8"))
    except OSError as exc:
        raise PoolsFileError(f"{path}: {exc.strerror or exc}") from exc
    except yamlfile.TooLargeError as exc:
        raise PoolsFileError(f"{path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PoolsFileError(
            f"{path}: not a text file (invalid UTF-8 at byte {exc.start})"
        ) from exc
    except yaml.YAMLError as exc:
        raise PoolsFileError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from exc
    except RecursionError as exc:
        raise PoolsFileError(f"{path}: not valid YAML: nested too deeply") from exc
    return parse_pools(doc, str(path))


def load_platform_config(path: Path) -> PlatformConfig:
    try:
        return PlatformConfig.model_validate(
            yamlfile.load(yamlfile.read_capped(path, "config file").decode("utf-8"))
        )
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from exc
    except yamlfile.TooLargeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (invalid UTF-8 at byte {exc.start})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_error_line(exc)}") from exc
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config:\n{format_validation_error(exc)}") from exc
