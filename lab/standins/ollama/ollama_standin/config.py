"""Lab test fixture: environment handling that mirrors upstream's envconfig.

The ollama Ansible role writes the same OLLAMA_* variables for the stand-in as
for real Ollama, so they are parsed here with upstream's rules (notably
OLLAMA_HOST's defaults). Stand-in-only variables:
* OLLAMA_STANDIN_MIRROR: the directory /api/pull copies models from, because
  the lab has no registry.ollama.ai;
* OLLAMA_STANDIN_TOKEN_SECONDS (default 0.015), OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS
  (0.0002) and OLLAMA_STANDIN_EMBED_SECONDS (0.002): how long a generated token,
  a prompt token and an embedding input take (pacing.py), so a query lasts
  about as long as on a small model on a GPU and rollouts under load meet
  requests in flight. Plain seconds (a float >= 0); 0 turns the delay off
  (what unit tests want); unset or empty means the default; anything else
  stops `serve` with an error naming the variable.
(OLLAMA_STANDIN_EMBEDDINGS, the embedding backend, is read in embedding.py.)
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ollama_standin.options import default_num_ctx
from ollama_standin.version import VERSION

DEFAULT_PORT = 11434
DEFAULT_KEEP_ALIVE = 300.0
# Seconds used for "never expire" (negative keep_alive), like upstream's max duration.
FOREVER = float(2**31)
RECORDED_ONLY = ("OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_MAX_QUEUE")

# Default pacing, near qwen2.5-coder:1.5b (the lab's generation model; 1.5-3B models are
# similar) at Q4 on one consumer or datacenter GPU (RTX 3060/4060, T4, L4): decoding is
# memory-bound at roughly 60-150 tokens/s, so ~65 tokens/s (0.015 s a token) is the
# cautious end; prompt evaluation is batched, thousands of tokens/s (0.0002 s a token,
# 5000/s); an embedding model (all-minilm, nomic-embed-text) takes a few ms per input
# through Ollama's HTTP path, 0.002 s. A RAG query (~2000 prompt tokens, ~60 answer
# tokens) thus takes ~1.3 s, as on such a GPU, instead of milliseconds.
TIMING_DEFAULTS = {
    "OLLAMA_STANDIN_TOKEN_SECONDS": 0.015,
    "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS": 0.0002,
    "OLLAMA_STANDIN_EMBED_SECONDS": 0.002,
}

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """An environment variable `serve` cannot start with; the message names it."""


def parse_seconds(env: Mapping[str, str], name: str) -> float:
    """A stand-in pacing variable: plain seconds >= 0, TIMING_DEFAULTS[name] when unset or empty."""
    text = env.get(name, "").strip()
    if not text:
        return TIMING_DEFAULTS[name]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"invalid {name}={text!r}: expected seconds as a number >= 0 (0 disables the delay)")
    return value


@dataclass(frozen=True)
class HostPort:
    """A parsed OLLAMA_HOST: bind address for `serve`, target for clients."""

    host: str
    port: int

    @property
    def connect_host(self) -> str:
        """Unspecified bind addresses are not connectable; use loopback (upstream ConnectableHost)."""
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    @property
    def base_url(self) -> str:
        """HTTP base URL a client should use to reach this server."""
        host = self.connect_host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: None when there is no (unambiguous) port."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 :].startswith(":"):
            return None
        return hostport[1:end], hostport[end + 2 :]
    if hostport.count(":") != 1:
        return None
    host, port = hostport.split(":")
    return host, port


def parse_host(value: str | None) -> HostPort:
    """Parse OLLAMA_HOST exactly as upstream envconfig.Host() does (scheme sets the default port)."""
    text = (value or "").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        hostport = text
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.split("/", 1)[0]
    parts = _split_host_port(hostport)
    if parts is None:
        host, port_text = "127.0.0.1", str(default_port)
        try:
            host = str(ipaddress.ip_address(hostport.strip("[]")))
        except ValueError:
            if hostport:
                host = hostport
    else:
        host, port_text = parts
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError(port_text)
    except ValueError:
        port = default_port
    return HostPort(host, port)


def parse_duration(value: object, default: float) -> float:
    """Seconds from a keep_alive value: a number of seconds or a Go duration; negative means forever."""
    if value is None or value == "":
        return default
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = sign * float(body)
        except ValueError:
            matches = list(_DURATION_PART.finditer(body))
            if not matches or "".join(m.group(0) for m in matches) != body:
                return default
            seconds = sign * sum(float(m.group(1)) * _UNIT_SECONDS[m.group(2)] for m in matches)
    return FOREVER if seconds < 0 else seconds


@dataclass(frozen=True)
class Settings:
    """Everything `ollama serve` takes from its environment."""

    bind: HostPort
    models_dir: Path
    mirror_dir: Path | None
    keep_alive: float
    recorded: Mapping[str, str] = field(default_factory=dict)
    context_length: int = 4096  # default num_ctx (OLLAMA_CONTEXT_LENGTH or the release's default)
    # Pacing (pacing.py): seconds per generated token, per prompt token, per embedding input.
    token_seconds: float = TIMING_DEFAULTS["OLLAMA_STANDIN_TOKEN_SECONDS"]
    prompt_token_seconds: float = TIMING_DEFAULTS["OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS"]
    embed_seconds: float = TIMING_DEFAULTS["OLLAMA_STANDIN_EMBED_SECONDS"]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read settings the way upstream does; tunables without meaning here are only recorded.

        Raises ConfigError for an unusable stand-in pacing variable.
        """
        models = env.get("OLLAMA_MODELS") or os.path.join(os.path.expanduser("~"), ".ollama", "models")
        mirror = env.get("OLLAMA_STANDIN_MIRROR")
        return cls(
            bind=parse_host(env.get("OLLAMA_HOST")),
            models_dir=Path(models),
            mirror_dir=Path(mirror) if mirror else None,
            keep_alive=parse_duration(env.get("OLLAMA_KEEP_ALIVE"), DEFAULT_KEEP_ALIVE),
            recorded={k: env[k] for k in RECORDED_ONLY if k in env},
            context_length=default_num_ctx(VERSION, env),
            token_seconds=parse_seconds(env, "OLLAMA_STANDIN_TOKEN_SECONDS"),
            prompt_token_seconds=parse_seconds(env, "OLLAMA_STANDIN_PROMPT_TOKEN_SECONDS"),
            embed_seconds=parse_seconds(env, "OLLAMA_STANDIN_EMBED_SECONDS"),
        )
