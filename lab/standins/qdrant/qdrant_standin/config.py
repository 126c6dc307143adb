"""Settings of the stand-in, read like upstream Qdrant reads them.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the qdrant Ansible role writes /etc/qdrant/config.yaml and may set
``QDRANT__SECTION__KEY`` environment overrides in the systemd unit; the stand-in
must honour both exactly where upstream does so the role runs unchanged.
Unknown keys are ignored, as upstream ignores keys it does not use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from . import yaml_subset

ENV_PREFIX = "QDRANT__"
DEFAULT_CONFIG_PATH = Path("config/config.yaml")
MAX_PEER_ID = (1 << 53) - 1  # upstream keeps peer ids JSON-safe


class ConfigError(ValueError):
    """The configuration cannot be used; the server must not start."""


@dataclass(frozen=True)
class Settings:
    """The subset of upstream's settings that the stand-in acts on."""

    log_level: str = "INFO"
    storage_path: Path = Path("./storage")
    snapshots_path: Path = Path("./snapshots")
    host: str = "0.0.0.0"
    http_port: int = 6333
    grpc_port: int | None = 6334
    api_key: str | None = None
    read_only_api_key: str | None = None
    enable_tls: bool = False
    verify_https_client_certificate: bool = False
    tls_cert: Path = Path("./tls/cert.pem")
    tls_key: Path = Path("./tls/key.pem")
    tls_ca_cert: Path = Path("./tls/cacert.pem")
    tls_cert_ttl: int | None = None  # seconds; None: never re-read (upstream: absent, null or 0)
    telemetry_disabled: bool = False
    # distributed mode (cluster.py): upstream's keys, an HTTP/JSON p2p port instead of gRPC
    cluster_enabled: bool = False
    p2p_port: int = 6335
    tick_period_ms: int = 100
    bootstrap_timeout_sec: int = 15
    cluster_peer_id: int | None = None
    p2p_enable_tls: bool = False
    standin_transfer_delay_ms: int = 0  # stand-in only: a pause before each shard copy, for tests


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def apply_env_overrides(tree: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Apply ``QDRANT__SERVICE__API_KEY=...``-style variables onto the config tree."""
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
        if path:
            _set_path(tree, path, yaml_subset.parse_scalar(raw))


def _section(tree: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = tree.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"'{name}' must be a mapping")
    return value


def _port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ConfigError(f"{key} must be a TCP port number, got {value!r}")
    return value


def _positive(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def _bool(value: Any, key: str) -> bool:
    """A YAML boolean, as serde reads one (no "yes", no 1)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _path(value: Any, key: str, default: Path) -> Path:
    if value is None or value == "":
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a file path (a string), got {value!r}")
    return Path(value)


def _cert_ttl(value: Any) -> int | None:
    """Upstream's ``tls.cert_ttl``: seconds, or absent/null (and 0, as upstream) for never."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"tls.cert_ttl must be a positive number of seconds or null, got {value!r}")
    return value or None


def _non_empty(value: Any) -> str | None:
    """Upstream treats an empty key as 'no key configured'."""
    if value is None or value == "":
        return None
    return str(value)


def from_tree(tree: Mapping[str, Any]) -> Settings:
    """Build settings from a parsed config tree (after env overrides)."""
    defaults = Settings()
    storage = _section(tree, "storage")
    service = _section(tree, "service")
    tls = _section(tree, "tls")
    grpc_port = service.get("grpc_port", defaults.grpc_port)
    cluster = _section(tree, "cluster")
    p2p = _section(cluster, "p2p")
    consensus = _section(cluster, "consensus")
    p2p_port = p2p.get("port")
    peer_id = cluster.get("peer_id")
    if peer_id is not None and (isinstance(peer_id, bool) or not isinstance(peer_id, int)
                                or not 1 <= peer_id <= MAX_PEER_ID):
        raise ConfigError(f"cluster.peer_id must be an integer between 1 and {MAX_PEER_ID}, got {peer_id!r}")
    return Settings(
        log_level=str(tree.get("log_level") or defaults.log_level),
        storage_path=Path(str(storage.get("storage_path") or defaults.storage_path)),
        snapshots_path=Path(str(storage.get("snapshots_path") or defaults.snapshots_path)),
        host=str(service.get("host") or defaults.host),
        http_port=_port(service.get("http_port", defaults.http_port), "service.http_port"),
        grpc_port=None if grpc_port is None else _port(grpc_port, "service.grpc_port"),
        api_key=_non_empty(service.get("api_key")),
        read_only_api_key=_non_empty(service.get("read_only_api_key")),
        enable_tls=_bool(service.get("enable_tls", False), "service.enable_tls"),
        verify_https_client_certificate=_bool(service.get("verify_https_client_certificate", False),
                                              "service.verify_https_client_certificate"),
        tls_cert=_path(tls.get("cert"), "tls.cert", defaults.tls_cert),
        tls_key=_path(tls.get("key"), "tls.key", defaults.tls_key),
        tls_ca_cert=_path(tls.get("ca_cert"), "tls.ca_cert", defaults.tls_ca_cert),
        tls_cert_ttl=_cert_ttl(tls.get("cert_ttl")),
        telemetry_disabled=bool(tree.get("telemetry_disabled", False)),
        cluster_enabled=bool(cluster.get("enabled", False)),
        p2p_port=defaults.p2p_port if p2p_port is None else _port(p2p_port, "cluster.p2p.port"),
        tick_period_ms=_positive(consensus.get("tick_period_ms", defaults.tick_period_ms),
                                 "cluster.consensus.tick_period_ms"),
        bootstrap_timeout_sec=_positive(consensus.get("bootstrap_timeout_sec", defaults.bootstrap_timeout_sec),
                                        "cluster.consensus.bootstrap_timeout_sec"),
        cluster_peer_id=peer_id,
        p2p_enable_tls=_bool(p2p.get("enable_tls", False), "cluster.p2p.enable_tls"),
        standin_transfer_delay_ms=int(cluster.get("standin_transfer_delay_ms") or 0),
    )


def load_settings(config_path: Path | None, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read the config file (upstream's default path when none is given) plus env overrides."""
    tree: dict[str, Any] = {}
    path = config_path if config_path is not None else DEFAULT_CONFIG_PATH
    if config_path is not None or path.is_file():
        try:
            parsed = yaml_subset.load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err}") from err
        except yaml_subset.YamlSubsetError as err:
            raise ConfigError(f"cannot parse config file {path}: {err}") from err
        if parsed is not None and not isinstance(parsed, dict):
            raise ConfigError(f"config file {path} must contain a mapping")
        tree = parsed or {}
    apply_env_overrides(tree, environ)
    return from_tree(tree)
