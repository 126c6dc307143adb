"""Collection aliases: alias -> collection name, persisted in ``aliases/data.json``.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: a re-index behind a stable name (build ``docs_v2``, then move the ``docs`` alias
onto it in one request) is the usual way to swap a collection without downtime, so
the stand-in keeps upstream's rules: an alias resolves before a collection of the
same name; creating one needs the target to exist and the alias name not to be a
collection; creating an existing alias moves it; deleting a missing alias is not an
error; renaming a missing one is a 404; deleting a collection drops its aliases.
One difference: a batch whose later action fails changes nothing here, whereas
upstream keeps the actions before the failing one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .errors import ApiError, not_found

ALIASES_FILE = Path("aliases") / "data.json"
_ACTIONS = {
    "create_alias": ("collection_name", "alias_name"),
    "delete_alias": ("alias_name",),
    "rename_alias": ("old_alias_name", "new_alias_name"),
}


def parse_actions(body: Any) -> list[tuple[str, dict[str, str]]]:
    """ChangeAliasesOperation: ``{"actions": [{"create_alias": {...}}, ...]}``."""
    actions = body.get("actions") if isinstance(body, dict) else None
    if not isinstance(actions, list):
        raise ApiError(400, "Json deserialize error: missing field `actions`")
    parsed = []
    for action in actions:
        kind = next(iter(action), None) if isinstance(action, dict) and len(action) == 1 else None
        fields = action.get(kind) if kind in _ACTIONS else None
        if not isinstance(fields, dict) or not all(isinstance(fields.get(f), str) for f in _ACTIONS[str(kind)]):
            raise ApiError(400, "Json deserialize error: data did not match any variant of untagged enum "
                           "AliasOperations")
        parsed.append((str(kind), {f: fields[f] for f in _ACTIONS[str(kind)]}))
    return parsed


def apply_actions(mapping: dict[str, str], actions: list[tuple[str, dict[str, str]]],
                  collection_exists: Callable[[str], bool]) -> dict[str, str]:
    """The alias map after ``actions`` (a new dict; ``mapping`` is left alone). Cluster mode
    applies the same rules to the replicated metadata."""
    mapping = dict(mapping)
    for kind, fields in actions:
        if kind == "create_alias":
            if not collection_exists(fields["collection_name"]):
                raise not_found(f"Collection `{fields['collection_name']}` doesn't exist!")
            if collection_exists(fields["alias_name"]):
                raise ApiError(409, f"Wrong input: Collection `{fields['alias_name']}` already exists!")
            mapping[fields["alias_name"]] = fields["collection_name"]
        elif kind == "delete_alias":
            mapping.pop(fields["alias_name"], None)
        else:
            old = fields["old_alias_name"]
            if old not in mapping:
                raise not_found(f"Alias {old} does not exists!")
            mapping[fields["new_alias_name"]] = mapping.pop(old)
    return mapping


def listing(mapping: dict[str, str], collection_names: list[str]) -> list[dict[str, str]]:
    """Upstream's GET /aliases: per collection (in name order), the aliases pointing at it."""
    return [{"alias_name": a, "collection_name": c} for c in sorted(collection_names)
            for a in sorted(a for a, t in mapping.items() if t == c)]


class AliasMap:
    """All aliases of the node; callers hold the store's lock."""

    def __init__(self, storage_path: Path, write: Callable[[Path, bytes], None]) -> None:
        self.path = storage_path / ALIASES_FILE
        self._write = write  # storage.write_atomically (storage imports this module)
        self.mapping: dict[str, str] = {}
        if self.path.is_file():
            self.mapping = dict(json.loads(self.path.read_text(encoding="utf-8")))

    def resolve(self, name: str) -> str:
        """The collection an alias points at; any other name unchanged (upstream checks aliases first)."""
        return self.mapping.get(name, name)

    def of_collection(self, collection_name: str) -> list[str]:
        return sorted(a for a, c in self.mapping.items() if c == collection_name)

    def listing(self, collection_names: list[str]) -> list[dict[str, str]]:
        """Upstream's GET /aliases: per collection (in name order), the aliases pointing at it."""
        return [{"alias_name": a, "collection_name": c} for c in sorted(collection_names)
                for a in self.of_collection(c)]

    def apply(self, actions: list[tuple[str, dict[str, str]]], collection_exists: Callable[[str], bool]) -> None:
        """Apply every action to a copy; persist and switch only when all succeeded."""
        self._save(apply_actions(self.mapping, actions, collection_exists))

    def drop_collection(self, collection_name: str) -> None:
        mapping = {a: c for a, c in self.mapping.items() if c != collection_name}
        if mapping != self.mapping:
            self._save(mapping)

    def _save(self, mapping: dict[str, str]) -> None:
        self._write(self.path, json.dumps(mapping, sort_keys=True).encode("utf-8"))
        self.mapping = mapping
