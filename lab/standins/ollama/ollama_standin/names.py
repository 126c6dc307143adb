"""Lab test fixture: Ollama model names ("[host/][namespace/]model[:tag]").

Both the stand-in's store and the mirror builder need upstream's defaults
(registry.ollama.ai / library / latest) so that files land at the same paths
real Ollama uses under OLLAMA_MODELS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}$")


class InvalidName(ValueError):
    """A model name upstream would also reject."""


@dataclass(frozen=True)
class ModelName:
    """A fully qualified model name."""

    host: str
    namespace: str
    model: str
    tag: str

    @property
    def manifest_relpath(self) -> PurePosixPath:
        """Path under <models>/manifests, as in upstream's layout."""
        return PurePosixPath(self.host, self.namespace, self.model, self.tag)

    @property
    def display(self) -> str:
        """Shortest unambiguous form, like upstream's DisplayShortest ("all-minilm:latest")."""
        prefix = ""
        if self.host != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"


def parse_name(text: str) -> ModelName:
    """Parse a user-supplied name, filling upstream's defaults; raise InvalidName if malformed."""
    raw = (text or "").strip()
    rest, _, tag = raw.rpartition(":") if ":" in raw.rsplit("/", 1)[-1] else (raw, "", DEFAULT_TAG)
    parts = rest.split("/")
    if len(parts) > 3:
        raise InvalidName(text)
    parts = [DEFAULT_HOST, DEFAULT_NAMESPACE][: 3 - len(parts)] + parts
    host, namespace, model = parts
    for part in (namespace, model, tag):
        if not _PART.match(part):
            raise InvalidName(text)
    if not re.match(r"^[A-Za-z0-9_.:-]+$", host):
        raise InvalidName(text)
    return ModelName(host, namespace, model, tag)
