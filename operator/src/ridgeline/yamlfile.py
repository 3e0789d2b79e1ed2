"""Small YAML files a person hands the CLI (model.yaml, POOLS.yaml, the operator config): read
at most a cap, and parse them as kubectl's YAML reader would (no duplicate keys, timestamps
kept as the text written)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import yaml
from yaml.constructor import ConstructorError

# A model.yaml or POOLS.yaml is a few kilobytes; etcd stores no object over 1.5 MiB and a
# ConfigMap holds at most 1 MiB.
MIB = 1024 * 1024
MAX_BYTES = MIB

_MERGE_TAG = "tag:yaml.org,2002:merge"


class TooLargeError(ValueError):
    """The file holds more than the cap."""


def read_capped(path: Path, what: str, cap: int = MAX_BYTES) -> bytes:
    """At most ``cap`` bytes of ``path``, or TooLargeError saying that a ``what`` is at most
    that. Reads cap + 1 bytes and no more, so /dev/zero, a FIFO or a growing file cannot fill
    memory; a size from stat would not do, since devices and pipes report 0. OSError passes
    through."""
    with path.open("rb") as f:
        raw = f.read(cap + 1)
    if len(raw) > cap:
        raise TooLargeError(
            f"larger than {cap} bytes ({cap / MIB:g} MiB), the most a {what} may be"
        )
    return raw


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: YAML forbids it, kubectl
    refuses it, and PyYAML would silently keep the last value. Keys brought in by a merge
    (``<<: *base``) may be overridden, as YAML's merge rules say."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[type, Any], yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            # By type too: `true` and `1` are different keys in the JSON kubectl sends.
            ident = (type(key), key)
            try:
                first = seen.get(ident)
            except TypeError:  # an unhashable key: SafeConstructor's own error names it
                continue
            if first is not None:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"duplicate key {key!r} (first on line {first.line + 1})",
                    key_node.start_mark,
                )
            seen[ident] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


# kubectl's reader (go-yaml into interface{}) keeps an unquoted timestamp as its string; a
# datetime here would be neither what the API server sees nor JSON.
def _timestamp_as_text(loader: UniqueKeyLoader, node: yaml.Node) -> str:
    return str(loader.construct_scalar(cast(yaml.ScalarNode, node)))


UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load(text: str) -> Any:
    """One YAML document, duplicate keys refused."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass


def load_all(text: str) -> list[Any]:
    """Every YAML document in ``text``, duplicate keys refused."""
    return list(yaml.load_all(text, Loader=UniqueKeyLoader))
