"""Distributed mode: peers, replicated metadata, shard replicas and transfers.

LAB TEST FIXTURE (QueryGPT Qdrant stand-in, NOT Qdrant).

Why: the project runs three Qdrant peers with sharded, replicated collections, rolls
upgrades one peer at a time and runs runbooks that remove a dead peer and re-replicate
its shards. Tests of that tooling need peers that answer upstream's cluster API with
upstream's shapes and rules, so this module imitates the parts the project uses.

It is NOT Raft and NOT upstream's wire protocol. The consistency model is simple and
deliberate:

- Every peer keeps a full copy of the cluster metadata (peers, collections with their
  config and shard -> replica -> state map, aliases, payload indexes, shard transfers),
  versioned by ``commit``.
- The *leader* is the live peer with the lowest peer id (liveness from heartbeats every
  250 ms over the p2p port). Only the leader changes metadata: any peer sends its
  proposal to the leader, the leader first pulls newer metadata from any live peer that
  reports a higher commit, applies the change (or refuses it with upstream's error),
  bumps ``commit`` (and ``term`` when leadership moved), pushes the whole metadata to
  every peer and answers. Peers that missed a push pull the newest metadata when a
  heartbeat shows a higher commit, so a restarted peer rejoins from its persisted peer
  list. A network partition can elect two leaders: not emulated, never do that here.
- Point data is not in the metadata: each peer holds its local shard replicas. A write
  goes to every updatable replica of its shard (Active, Partial, Initializing,
  Listener), succeeds when ``min(write_consistency_factor, replicas)`` acknowledged,
  and the replicas that failed for a transient reason (peer unreachable, 5xx) are then
  marked Dead through the leader, as upstream does. A read goes to one Active replica of
  each shard (the local one first, the next one when a peer does not answer).
- A Dead replica whose peer is alive asks the leader for a transfer from an Active
  replica (upstream's automatic recovery): the replica turns Partial, the source copies
  the whole shard (a stream copy) and the replica turns Active. Writes that reach a
  Partial replica before its copy arrives are queued and replayed after it, minus those
  the copy already contains (every write carries an id).

Peer-to-peer traffic is HTTP/JSON on ``cluster.p2p.port`` (upstream: gRPC). By default
without TLS or auth (upstream's default p2p port has neither): bind it privately. With
``cluster.p2p.enable_tls`` it is HTTPS both ways, as upstream's internal gRPC: the server
requires a client certificate from ``tls.ca_cert`` (peers only), the client verifies the
peer's certificate against ``tls.ca_cert`` and the host of its ``https://`` URI, and
presents this node's certificate (contexts from tls.py, handed in by server.py).
"""

from __future__ import annotations

import collections
import copy
import functools
import http.client
import json
import logging
import random
import shutil
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zlib
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from . import points as pts
from .aliases import apply_actions
from .errors import ApiError, bad_input, bad_request, collection_not_found, not_found
from .shard_ops import apply_read, apply_write
from .storage import Collection, _merge, apply_config_diff, write_atomically
from .tls import PerConnectionTls, ServerTls

LOG = logging.getLogger("qdrant.cluster")
RAFT_STATE_FILE = "raft_state.json"  # upstream's file name; the content is the stand-in's own
METADATA_FILE = "standin-cluster-metadata.json"
SHARD_FILE = "standin-shard.json"
HEARTBEAT_SECONDS = 0.25
PING_TIMEOUT = 0.5
P2P_TIMEOUT = 10.0
TRANSFER_TIMEOUT = 120.0
APPLIED_OPS_KEPT = 20000
UPDATABLE = ("Active", "Partial", "Initializing", "Listener")
UNHEALTHY = ("Dead", "Partial", "Initializing", "PartialSnapshot", "Recovery")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def now_iso() -> str:
    """chrono's DateTime<Utc> as serde writes it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PeerUnavailable(ApiError):
    """A peer did not answer: upstream's transport error, a 500 (transient: the replica is
    marked Dead when enough others took the write)."""

    def __init__(self, uri: str, error: Any) -> None:
        super().__init__(500, f"Service internal error: Failed to connect to {uri}, error: {error}")


@functools.lru_cache(maxsize=8)
def _tls_opener(context: ssl.SSLContext) -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))


def p2p_call(uri: str, path: str, body: Any = None, timeout: float = P2P_TIMEOUT,
             tls: ssl.SSLContext | None = None) -> Any:
    """POST JSON to a peer's p2p port; its errors come back as the ApiError it raised.
    ``tls`` (cluster.p2p.enable_tls) is the client context for ``https://`` URIs; with it a
    plaintext ``http://`` URI is refused, without it an ``https://`` one."""
    _check_scheme(uri, tls)
    opener = _NO_PROXY if tls is None else _tls_opener(tls)
    request = urllib.request.Request(uri.rstrip("/") + path, data=json.dumps(body or {}).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        raise _peer_error(uri, err.code, err.read()) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise PeerUnavailable(uri, getattr(err, "reason", err)) from None


def _check_scheme(uri: str, tls: ssl.SSLContext | None) -> None:
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme == "https" and tls is None:
        raise PeerUnavailable(uri, "an https:// peer URI, but cluster.p2p.enable_tls is false")
    if scheme == "http" and tls is not None:
        raise PeerUnavailable(uri, "a plaintext http:// peer URI, but cluster.p2p.enable_tls is true")


def _peer_error(uri: str, code: int, raw: bytes) -> ApiError:
    """The ApiError a peer's non-2xx answer carries (its JSON body), else a 500."""
    try:
        doc = json.loads(raw)
        return ApiError(int(doc["status"]), str(doc["message"]))
    except (ValueError, KeyError, TypeError):
        return ApiError(500, f"Service internal error: peer {uri} answered {code}")


class KeptLinks:
    """One kept-alive connection per peer, for the heartbeat's pings (one thread uses it).

    Upstream keeps a gRPC channel open to each peer; a new connection per ping (four a second
    to every peer) meant a TLS handshake each time, both ends verifying a certificate chain:
    a tenth of a core for the lab's three idle peers. A kept connection the peer closed (it
    restarted) is replaced at once, one time; a peer that does not answer in time is unavailable,
    as before.
    """

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.links: dict[str, http.client.HTTPConnection] = {}

    def call(self, uri: str, path: str, body: Any = None, timeout: float = P2P_TIMEOUT) -> Any:
        _check_scheme(uri, self.tls)
        for _ in range(2):
            link, fresh = self.links.get(uri), uri not in self.links
            if link is None:
                parts = urllib.parse.urlsplit(uri)
                link = (http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
                        if self.tls is None else
                        http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=timeout,
                                                    context=self.tls))
                self.links[uri] = link
            try:
                if link.sock is not None:
                    link.sock.settimeout(timeout)
                link.request("POST", path, body=json.dumps(body or {}).encode(),
                             headers={"Content-Type": "application/json"})
                response = link.getresponse()
                raw = response.read()
            # closed under us: reset, a plain EOF, or a TLS one (a killed peer sends no close_notify)
            except (ConnectionError, http.client.HTTPException, ssl.SSLEOFError, ssl.SSLZeroReturnError) as err:
                self.drop(uri)
                if fresh:
                    raise PeerUnavailable(uri, err) from None
                continue  # the peer closed the kept connection: once more, on a new one
            except OSError as err:  # a timeout, a refused or unreachable address, a TLS failure
                self.drop(uri)
                raise PeerUnavailable(uri, err) from None
            if response.status != 200:
                raise _peer_error(uri, response.status, raw)
            return json.loads(raw or b"null")
        raise PeerUnavailable(uri, "the kept connection and a new one were both closed")

    def drop(self, uri: str) -> None:
        link = self.links.pop(uri, None)
        if link is not None:
            link.close()

    def close(self) -> None:
        for uri in list(self.links):
            self.drop(uri)


def shard_for(point_id: pts.PointId, shard_number: int) -> int:
    """The shard of a point: crc32 of its canonical id. NOT upstream's hash (upstream hashes
    the id into a ring); points land on different shard numbers than on Qdrant."""
    return zlib.crc32(str(point_id).encode()) % shard_number


def distribute(shard_number: int, replication_factor: int, peer_ids: list[int]) -> dict[str, dict[str, str]]:
    """Upstream's ShardDistributionProposal: each replica on the peer with the fewest replicas
    so far (random tie-break), never two replicas of a shard on one peer, so the replica
    count is capped at the number of peers (the config keeps the requested factor)."""
    load = {p: [0, random.getrandbits(32), p] for p in peer_ids}
    replicas = min(replication_factor, len(peer_ids))
    shards: dict[str, dict[str, str]] = {}
    for shard_id in range(shard_number):
        chosen: list[int] = []
        for _ in range(replicas):
            best = min((v for p, v in load.items() if p not in chosen), key=lambda v: (v[0], v[1], v[2]))
            best[0] += 1
            chosen.append(best[2])
        shards[str(shard_id)] = {str(p): "Active" for p in chosen}
    return shards


def _collection(meta: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        return meta["collections"][name]
    except KeyError:
        raise collection_not_found(name) from None


def _transfers(meta: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return meta["transfers"].setdefault(name, [])


def _find_transfer(meta: dict[str, Any], name: str, shard_id: int, from_peer: int, to_peer: int) -> dict[str, Any]:
    for transfer in meta["transfers"].get(name, []):
        if (transfer["shard_id"], transfer["from"], transfer["to"]) == (shard_id, from_peer, to_peer):
            return transfer
    raise not_found(f"Shard transfer {from_peer} -> {to_peer} for collection {name}:{shard_id} does not exist")


def _drop_transfer(meta: dict[str, Any], name: str, transfer: dict[str, Any]) -> None:
    """Upstream's abort: a replicated (sync) target turns Dead, a moved one is removed."""
    meta["transfers"][name].remove(transfer)
    replicas = meta["collections"][name]["shards"].get(str(transfer["shard_id"]), {})
    target = str(transfer["to"])
    if target in replicas:
        if transfer["sync"]:
            replicas[target] = "Dead"
        else:
            del replicas[target]


def apply_meta_op(meta: dict[str, Any], op: dict[str, Any]) -> Any:
    """Apply one metadata change in place (the leader does this on a copy); raises the
    error upstream gives for an invalid change. Returns the operation's result."""
    kind = op["type"]
    if kind == "add_peer":
        meta["peers"][str(op["peer_id"])] = op["uri"]
        return True
    if kind == "remove_peer":
        peer = str(op["peer_id"])
        if peer not in meta["peers"]:
            raise bad_request(f"Peer {op['peer_id']} does not exist")
        del meta["peers"][peer]
        for name, coll in meta["collections"].items():
            for transfer in [t for t in meta["transfers"].get(name, []) if str(t["from"]) == peer or str(t["to"]) == peer]:
                _drop_transfer(meta, name, transfer)
            for replicas in coll["shards"].values():
                replicas.pop(peer, None)
        return True
    if kind == "create_collection":
        name = op["collection"]
        if name in meta["collections"]:
            raise ApiError(409, f"Wrong input: Collection `{name}` already exists!")
        if name in meta["aliases"]:
            raise bad_input(f"Can't create collection with name {name}. Alias with the same name already exists")
        params = op["config"]["params"]
        peers = sorted(int(p) for p in meta["peers"])
        meta["collections"][name] = {
            "config": op["config"], "created_at": op["created_at"], "payload_schema": {},
            "shards": distribute(params["shard_number"], params["replication_factor"], peers),
        }
        meta["transfers"][name] = []
        return True
    if kind == "update_collection":
        coll = _collection(meta, op["collection"])
        config = copy.deepcopy(coll["config"])
        body = op["body"]
        vectors_diff = body.get("vectors")
        if isinstance(vectors_diff, dict):
            diff = vectors_diff.get("", vectors_diff)
            _merge(config["params"]["vectors"], {k: v for k, v in diff.items() if k not in ("size", "distance")})
        apply_config_diff(config, body)
        config["params"]["shard_number"] = coll["config"]["params"]["shard_number"]  # no resharding
        coll["config"] = config
        return True
    if kind == "delete_collection":
        name = op["collection"]
        meta["aliases"] = {a: c for a, c in meta["aliases"].items() if c != name}
        meta["transfers"].pop(name, None)
        return meta["collections"].pop(name, None) is not None
    if kind == "aliases":
        actions = [(k, f) for k, f in op["actions"]]
        meta["aliases"] = apply_actions(meta["aliases"], actions, meta["collections"].__contains__)
        return True
    if kind == "create_index":
        _collection(meta, op["collection"])["payload_schema"][op["field"]] = op["schema"]
        return True
    if kind == "delete_index":
        _collection(meta, op["collection"])["payload_schema"].pop(op["field"], None)
        return True
    name = op["collection"]
    coll = _collection(meta, name)
    shard_id = int(op["shard_id"])
    replicas = coll["shards"].get(str(shard_id))
    if replicas is None:
        raise bad_request(f"Shard {shard_id} of {name} does not exist")
    if kind == "set_replica_state":
        peer = str(op["peer_id"])
        current = replicas.get(peer)
        if current is None:
            raise bad_input(f"Can't set replica {peer}:{shard_id} state to {op['state']}, because replica "
                            f"{peer}:{shard_id} does not exist")
        if op.get("from_state") is not None and current != op["from_state"]:
            raise bad_input(f"Replica {peer} of shard {shard_id} has state {current}, but expected {op['from_state']}")
        if op["state"] != "Active" and current == "Active" and \
                sum(1 for s in replicas.values() if s == "Active") == 1:
            raise bad_input(f"Cannot deactivate the last active replica {peer} of shard {shard_id}")
        replicas[peer] = op["state"]
        return True
    if kind == "drop_replica":
        peer = str(op["peer_id"])
        if peer not in replicas:
            raise bad_request(f"Peer {peer} has no replica of shard {shard_id}")
        others_active = any(s == "Active" for p, s in replicas.items() if p != peer)
        if len(replicas) == 1 or not others_active:
            raise bad_request(f"Shard {shard_id} must have at least one active replica after removing {peer}")
        for transfer in [t for t in meta["transfers"].get(name, [])
                         if t["shard_id"] == shard_id and peer in (str(t["from"]), str(t["to"]))]:
            _drop_transfer(meta, name, transfer)
        replicas.pop(peer, None)
        return True
    if kind == "start_transfer":
        source, target = str(op["from"]), str(op["to"])
        for peer in (source, target):
            if peer not in meta["peers"]:
                raise bad_request(f"Peer {peer} does not exist")
        if replicas.get(source) != "Active":
            raise bad_request(f"Shard {shard_id} is not active on peer {source}")
        for other in meta["transfers"].get(name, []):
            if other["shard_id"] == shard_id and {str(other["from"]), str(other["to"])} & {source, target}:
                raise bad_request(f"Shard {shard_id} is already involved in transfer {other['from']} -> {other['to']}")
        replicas[target] = "Partial"
        _transfers(meta, name).append({"shard_id": shard_id, "from": int(source), "to": int(target),
                                       "sync": bool(op["sync"]), "method": op.get("method") or "stream_records"})
        return True
    if kind == "finish_transfer":
        transfer = _find_transfer(meta, name, shard_id, int(op["from"]), int(op["to"]))
        meta["transfers"][name].remove(transfer)
        replicas[str(transfer["to"])] = "Active"
        if not transfer["sync"]:
            replicas.pop(str(transfer["from"]), None)
        return True
    if kind == "abort_transfer":
        _drop_transfer(meta, name, _find_transfer(meta, name, shard_id, int(op["from"]), int(op["to"])))
        return True
    raise ValueError(f"unknown metadata operation {kind!r}")


class Cluster:
    """This peer's view of the cluster and its local shard replicas. ``lock`` guards the
    metadata and the local shards; it is never held across a call to another peer."""

    def __init__(self, storage_path: Path, version: str, p2p_port: int, configured_peer_id: int | None,
                 bootstrap_timeout_sec: int, transfer_delay_ms: int = 0,
                 tls_client: ssl.SSLContext | None = None) -> None:
        self.root = storage_path
        self.tls_client = tls_client  # cluster.p2p.enable_tls: peers are https:// and verified
        self.heartbeat_links = KeptLinks(tls_client)  # the heartbeat thread's alone
        self.version = version
        self.p2p_port = p2p_port
        self.bootstrap_timeout_sec = bootstrap_timeout_sec
        self.transfer_delay = transfer_delay_ms / 1000
        self.lock = threading.RLock()
        self.lead_lock = threading.Lock()
        self.alive: dict[int, bool] = {}
        self.peer_commit: dict[int, int] = {}
        self.failures: dict[str, dict[str, Any]] = {}
        self.last_update = now_iso()
        self.running_transfers: set[tuple[str, int, int, int]] = set()
        self.installed: set[tuple[str, int, int, int]] = set()
        self.pending: dict[tuple[str, int], list[tuple[str, dict[str, Any]]]] = {}
        self.applied: dict[tuple[str, int], collections.OrderedDict[str, None]] = {}
        self.recovery_attempts: dict[tuple[str, int], float] = {}
        self.synced = False
        self.ready = False
        self.stopping = threading.Event()
        self.shards: dict[tuple[str, int], Collection] = {}
        self.root.mkdir(parents=True, exist_ok=True)
        state_file = self.root / RAFT_STATE_FILE
        self.has_state = state_file.is_file()
        if self.has_state:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            self.peer_id = int(state["this_peer_id"])
            self.first_voter = state.get("first_voter")
        else:
            self.peer_id = configured_peer_id or random.getrandbits(64) % (1 << 53) + 1
            self.first_voter = None
        meta_file = self.root / METADATA_FILE
        self.meta: dict[str, Any] = (json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.is_file()
                                     else self.empty_metadata())
        self._load_shards()

    @staticmethod
    def empty_metadata() -> dict[str, Any]:
        return {"commit": 0, "term": 0, "leader": None, "peers": {}, "collections": {}, "aliases": {},
                "transfers": {}}

    # -- persistence -----------------------------------------------------------

    def _shard_dir(self, key: tuple[str, int]) -> Path:
        return self.root / "collections" / key[0] / str(key[1])

    def _load_shards(self) -> None:
        base = self.root / "collections"
        for data_file in sorted(base.glob(f"*/*/{SHARD_FILE}")) if base.is_dir() else []:
            name, shard_id = data_file.parent.parent.name, int(data_file.parent.name)
            self.shards[(name, shard_id)] = Collection.from_json(name, json.loads(data_file.read_text(encoding="utf-8")))

    def save_shard(self, key: tuple[str, int]) -> None:
        data = dict(self.shards[key].to_json(), standin_version=self.version)
        write_atomically(self._shard_dir(key) / SHARD_FILE, json.dumps(data, separators=(",", ":")).encode())

    def _persist(self) -> None:
        """The metadata, and upstream-named raft_state.json holding this peer's id and the peer
        addresses (what a runbook reads to learn a peer's id)."""
        write_atomically(self.root / METADATA_FILE, json.dumps(self.meta, sort_keys=True).encode())
        state = {
            "standin": "QueryGPT lab stand-in, not Qdrant: not upstream's raft state format",
            "this_peer_id": self.peer_id,
            "first_voter": self.first_voter,
            "peer_address_by_id": self.meta["peers"],
            "commit": self.meta["commit"],
            "term": self.meta["term"],
        }
        write_atomically(self.root / RAFT_STATE_FILE, json.dumps(state, sort_keys=True, indent=1).encode())
        self.has_state = True

    def call(self, uri: str, path: str, body: Any = None, timeout: float = P2P_TIMEOUT) -> Any:
        """p2p_call with this node's p2p TLS client context (if any)."""
        return p2p_call(uri, path, body, timeout, tls=self.tls_client)

    # -- start-up ----------------------------------------------------------------

    @property
    def uri(self) -> str | None:
        return self.meta["peers"].get(str(self.peer_id))

    def start(self, uri: str | None, bootstrap: str | None) -> None:
        """Bootstrap a new cluster, join one, or rejoin from the persisted state (upstream
        ignores --uri and --bootstrap then too)."""
        if bootstrap is not None and uri is not None and bootstrap.rstrip("/") == uri.rstrip("/"):
            LOG.warning("Bootstrap URI is the same as this peer URI. Consider this peer as a first in a new deployment.")
            bootstrap = None
        if self.has_state and self.meta["peers"]:
            if bootstrap or uri:
                LOG.info("Local raft state found - bootstrap and uri cli arguments were ignored")
            LOG.info("Rejoining the cluster as peer %d from the persisted peer list", self.peer_id)
        elif bootstrap is not None:
            self._join(bootstrap, uri)
        else:
            if uri is None:
                raise ValueError("First peer should specify its uri.")
            self.first_voter = self.peer_id
            meta = self.empty_metadata()
            meta.update(commit=1, term=1, leader=self.peer_id, peers={str(self.peer_id): uri})
            with self.lock:
                self.meta = meta
                self._persist()
            LOG.info("Bootstrapped a new cluster as peer %d (%s)", self.peer_id, uri)
        self.heartbeat()
        self.synced = True
        self._start_transfers()
        threading.Thread(target=self._heartbeat_loop, name="standin-heartbeat", daemon=True).start()

    def _join(self, bootstrap: str, uri: str | None) -> None:
        deadline = time.monotonic() + self.bootstrap_timeout_sec
        body = {"peer_id": self.peer_id, "uri": uri, "p2p_port": self.p2p_port}
        while True:
            try:
                answer = self.call(bootstrap, "/p2p/join", body)
                break
            except ApiError as err:
                if time.monotonic() > deadline:
                    raise ValueError(f"cannot join the cluster through {bootstrap}: {err.message}") from None
                time.sleep(0.2)
        self.apply_metadata(answer["metadata"], force=True)
        LOG.info("Joined the cluster through %s as peer %d (%s)", bootstrap, self.peer_id, self.uri)

    def stop(self) -> None:
        self.stopping.set()

    # -- membership and leadership --------------------------------------------------

    def peer_ids(self) -> list[int]:
        with self.lock:
            return sorted(int(p) for p in self.meta["peers"])

    def peer_uri(self, peer_id: int) -> str:
        with self.lock:
            uri = self.meta["peers"].get(str(peer_id))
        if uri is None:
            raise bad_request(f"Peer {peer_id} does not exist")
        return uri

    def leader(self) -> int:
        """The live peer with the lowest id (this peer counts as live)."""
        for peer in self.peer_ids():
            if peer == self.peer_id or self.alive.get(peer):
                return peer
        return self.peer_id

    def heartbeat(self) -> None:
        """Ping every peer; pull the metadata from one that is ahead."""
        with self.lock:
            peers = {int(p): u for p, u in self.meta["peers"].items() if int(p) != self.peer_id}
        ahead: tuple[int, str] | None = None
        for peer, uri in peers.items():
            try:
                status = self.heartbeat_links.call(uri, "/p2p/status", {}, timeout=PING_TIMEOUT)
            except ApiError as err:
                self.alive[peer] = False
                failure = self.failures.setdefault(uri, {"count": 0})
                failure.update(count=failure["count"] + 1, latest_error=err.message, latest_error_timestamp=now_iso())
                continue
            if int(status.get("peer_id", -1)) != peer:
                self.alive[peer] = False
                continue
            self.alive[peer] = True
            self.failures.pop(uri, None)
            self.peer_commit[peer] = int(status["commit"])
            if status["commit"] > self.meta["commit"] and (ahead is None or status["commit"] > ahead[0]):
                ahead = (status["commit"], uri)
        if ahead is not None:
            self.pull(ahead[1])
        self.last_update = now_iso()

    def pull(self, uri: str) -> None:
        try:
            self.apply_metadata(self.call(uri, "/p2p/metadata/pull", {})["metadata"])
        except ApiError as err:
            LOG.warning("cannot pull the cluster metadata from %s: %s", uri, err.message)

    def ensure_commit(self, commit: int | None, sender: str | None) -> None:
        """A peer that acts on metadata this peer has not seen yet sends its commit: catch up first."""
        if commit is not None and sender and commit > self.meta["commit"]:
            self.pull(sender)

    def _heartbeat_loop(self) -> None:
        while not self.stopping.wait(HEARTBEAT_SECONDS):
            try:
                self.heartbeat()
                self._recover_dead_replicas()
                self._abort_orphan_transfers()
                self._start_transfers()
            except Exception:  # noqa: BLE001 - keep the loop alive, like a consensus thread
                LOG.exception("cluster heartbeat failed")

    # -- metadata ------------------------------------------------------------------

    def propose(self, op: dict[str, Any]) -> Any:
        """Have the leader apply a metadata change; returns its result, raises its error."""
        last: ApiError | None = None
        for _ in range(max(3, len(self.peer_ids()) + 1)):
            leader = self.leader()
            if leader == self.peer_id:
                return self.lead(op)
            try:
                answer = self.call(self.peer_uri(leader), "/p2p/propose", {"op": op})
            except PeerUnavailable as err:
                self.alive[leader] = False
                last = err
                continue
            self.apply_metadata(answer["metadata"])
            return answer["result"]
        raise last or ApiError(500, "Service internal error: no leader reachable")

    def lead(self, op: dict[str, Any]) -> Any:
        with self.lead_lock:
            with self.lock:
                ahead = [(c, p) for p, c in self.peer_commit.items() if self.alive.get(p) and c > self.meta["commit"]]
            if ahead:
                self.pull(self.peer_uri(max(ahead)[1]))
            with self.lock:
                meta = copy.deepcopy(self.meta)
                result = apply_meta_op(meta, op)
                if meta.get("leader") != self.peer_id:
                    meta["term"] += 1
                    meta["leader"] = self.peer_id
                meta["commit"] += 1
                targets = {int(p): u for p, u in meta["peers"].items() if int(p) != self.peer_id}
                self.apply_metadata(meta)
            self._push(meta, targets)
        return result

    def _push(self, meta: dict[str, Any], targets: dict[int, str]) -> None:
        def push(peer: int, uri: str) -> None:
            try:
                self.call(uri, "/p2p/metadata/push", {"metadata": meta}, timeout=2)
            except ApiError:
                self.alive[peer] = False
        threads = [threading.Thread(target=push, args=item, daemon=True) for item in targets.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(3)

    def apply_metadata(self, meta: dict[str, Any], force: bool = False) -> bool:
        with self.lock:
            if not force and meta["commit"] <= self.meta["commit"]:
                return False
            self.meta = meta
            self._reconcile()
            self._persist()
        self._start_transfers()
        return True

    def _reconcile(self) -> None:
        """Create, update and drop local shard replicas to match the metadata."""
        wanted: dict[tuple[str, int], dict[str, Any]] = {}
        me = str(self.peer_id)
        for name, coll in self.meta["collections"].items():
            for shard_id, replicas in coll["shards"].items():
                if me in replicas:
                    wanted[(name, int(shard_id))] = coll
        for key in list(self.shards):
            if key not in wanted or self.shards[key].created_at != wanted[key]["created_at"]:
                self.shards.pop(key)
                self.pending.pop(key, None)
                self.applied.pop(key, None)
                shutil.rmtree(self._shard_dir(key), ignore_errors=True)
        base = self.root / "collections"
        for data_file in list(base.glob(f"*/*/{SHARD_FILE}")) if base.is_dir() else []:
            name, shard_id = data_file.parent.parent.name, data_file.parent.name
            if not shard_id.isdigit() or (name, int(shard_id)) not in wanted:
                shutil.rmtree(data_file.parent, ignore_errors=True)
                try:
                    data_file.parent.parent.rmdir()  # only when nothing else is left in it
                except OSError:
                    pass
        for key, coll in wanted.items():
            shard = self.shards.get(key)
            if shard is None:
                self.shards[key] = Collection(name=key[0], config=copy.deepcopy(coll["config"]),
                                              created_at=coll["created_at"])
                self.save_shard(key)
            elif shard.config != coll["config"]:
                shard.config = copy.deepcopy(coll["config"])
                self.save_shard(key)
        live = {(name, t["shard_id"], t["from"], t["to"]) for name, ts in self.meta["transfers"].items() for t in ts}
        self.installed &= live

    def state_of(self, name: str, shard_id: int, peer: int) -> str | None:
        with self.lock:
            coll = self.meta["collections"].get(name)
            return None if coll is None else coll["shards"].get(str(shard_id), {}).get(str(peer))

    # -- local replicas --------------------------------------------------------------

    def _incoming(self, key: tuple[str, int]) -> tuple[str, int, int, int] | None:
        for t in self.meta["transfers"].get(key[0], []):
            if t["shard_id"] == key[1] and t["to"] == self.peer_id:
                return (key[0], t["shard_id"], t["from"], t["to"])
        return None

    def _remember(self, key: tuple[str, int], op_id: str) -> None:
        applied = self.applied.setdefault(key, collections.OrderedDict())
        applied[op_id] = None
        while len(applied) > APPLIED_OPS_KEPT:
            applied.popitem(last=False)

    def local_update(self, name: str, shard_id: int, op: dict[str, Any], op_id: str) -> int:
        key = (name, shard_id)
        with self.lock:
            transfer = self._incoming(key)
            shard = self.shards.get(key)
            if transfer is not None and transfer not in self.installed:
                self.pending.setdefault(key, []).append((op_id, op))  # replayed after the copy
                return shard.operation_id if shard else 0
            if shard is None:
                raise ApiError(500, f"Service internal error: shard {shard_id} of {name} is not on peer {self.peer_id}")
            operation_id = apply_write(shard, op)
            self._remember(key, op_id)
            self.save_shard(key)
            return operation_id

    def local_read(self, name: str, shard_id: int, op: dict[str, Any]) -> Any:
        with self.lock:
            shard = self.shards.get((name, shard_id))
            if shard is None:
                raise ApiError(500, f"Service internal error: shard {shard_id} of {name} is not on peer {self.peer_id}")
            return apply_read(shard, op)

    def local_points(self, name: str, shard_id: int) -> Collection:
        """A copy of a local replica (snapshots, transfers)."""
        with self.lock:
            shard = self.shards.get((name, shard_id))
            if shard is None:
                raise bad_input(f"Shard {shard_id} is not a local shard")
            return Collection.from_json(name, shard.to_json())

    def install(self, name: str, shard_id: int, data: dict[str, Any], applied_ops: list[str],
                transfer: tuple[str, int, int, int] | None) -> None:
        """Replace a local replica with copied points; replay queued writes the copy lacks."""
        key = (name, shard_id)
        with self.lock:
            coll = self.meta["collections"].get(name)
            if coll is None or str(self.peer_id) not in coll["shards"].get(str(shard_id), {}):
                raise bad_request(f"Shard {shard_id} of {name} has no replica on peer {self.peer_id}")
            shard = Collection.from_json(name, data)
            shard.config = copy.deepcopy(coll["config"])
            shard.created_at = coll["created_at"]
            self.shards[key] = shard
            self.applied[key] = collections.OrderedDict((op_id, None) for op_id in applied_ops)
            for op_id, op in self.pending.pop(key, []):
                if op_id in self.applied[key]:
                    continue
                try:
                    apply_write(shard, op)
                except ApiError as err:
                    LOG.warning("queued write on %s:%d failed after the copy: %s", name, shard_id, err.message)
                self._remember(key, op_id)
            if transfer is not None:
                self.installed.add(transfer)
            self.save_shard(key)

    # -- transfers and recovery --------------------------------------------------------

    def _start_transfers(self) -> None:
        if not self.synced:
            return
        with self.lock:
            todo = [(name, dict(t)) for name, ts in self.meta["transfers"].items() for t in ts
                    if t["from"] == self.peer_id and (name, t["shard_id"], t["from"], t["to"]) not in self.running_transfers]
            for name, t in todo:
                self.running_transfers.add((name, t["shard_id"], t["from"], t["to"]))
        for name, t in todo:
            threading.Thread(target=self._run_transfer, args=(name, t), daemon=True,
                             name=f"transfer-{name}-{t['shard_id']}").start()

    def _transfer_exists(self, name: str, t: dict[str, Any]) -> bool:
        with self.lock:
            return any((o["shard_id"], o["from"], o["to"]) == (t["shard_id"], t["from"], t["to"])
                       for o in self.meta["transfers"].get(name, []))

    def _run_transfer(self, name: str, t: dict[str, Any]) -> None:
        key = (name, t["shard_id"], t["from"], t["to"])
        ref = {"collection": name, "shard_id": t["shard_id"], "from": t["from"], "to": t["to"]}
        try:
            if self.transfer_delay:
                time.sleep(self.transfer_delay)  # stand-in test knob: lets tests see a running transfer
            if not self._transfer_exists(name, t):
                return
            with self.lock:
                shard = self.shards.get((name, t["shard_id"]))
                if shard is None:
                    raise ApiError(500, f"Service internal error: shard {t['shard_id']} of {name} is not local")
                data = shard.to_json()
                applied = list(self.applied.get((name, t["shard_id"]), {}))
                commit = self.meta["commit"]
            self.call(self.peer_uri(t["to"]), "/p2p/shard/receive",
                      dict(ref, data=data, applied_ops=applied, commit=commit, sender=self.uri),
                      timeout=TRANSFER_TIMEOUT)
            if self._transfer_exists(name, t):
                self.propose(dict(ref, type="finish_transfer"))
                LOG.info("shard %s:%d transferred %d -> %d", name, t["shard_id"], t["from"], t["to"])
        except ApiError as err:
            LOG.warning("shard transfer %s:%d %d -> %d failed: %s", name, t["shard_id"], t["from"], t["to"], err.message)
            if self._transfer_exists(name, t):
                try:
                    self.propose(dict(ref, type="abort_transfer"))
                except ApiError as abort_err:
                    LOG.warning("cannot abort the transfer: %s", abort_err.message)
        finally:
            with self.lock:
                self.running_transfers.discard(key)

    def _recover_dead_replicas(self) -> None:
        """Upstream's automatic recovery: a Dead local replica asks for a copy from an Active one."""
        me = str(self.peer_id)
        todo = []
        with self.lock:
            for name, coll in self.meta["collections"].items():
                for shard_id, replicas in coll["shards"].items():
                    if replicas.get(me) != "Dead" or self._incoming((name, int(shard_id))) is not None:
                        continue
                    sources = [int(p) for p, s in sorted(replicas.items()) if s == "Active" and self.alive.get(int(p))]
                    if sources:
                        todo.append((name, int(shard_id), sources[0]))
        for name, shard_id, source in todo:
            if time.monotonic() - self.recovery_attempts.get((name, shard_id), 0) < 1:
                continue
            self.recovery_attempts[(name, shard_id)] = time.monotonic()
            try:
                self.propose({"type": "start_transfer", "collection": name, "shard_id": shard_id, "from": source,
                              "to": self.peer_id, "sync": True, "method": "stream_records"})
                LOG.info("recovering dead replica %s:%d from peer %d", name, shard_id, source)
            except ApiError as err:
                LOG.info("cannot start the recovery of %s:%d yet: %s", name, shard_id, err.message)

    def _abort_orphan_transfers(self) -> None:
        """The leader aborts transfers whose source or target peer stopped answering."""
        if self.leader() != self.peer_id:
            return
        with self.lock:
            orphans = [(name, dict(t)) for name, ts in self.meta["transfers"].items() for t in ts
                       if any(p != self.peer_id and not self.alive.get(p) for p in (t["from"], t["to"]))]
        for name, t in orphans:
            try:
                self.propose({"type": "abort_transfer", "collection": name, "shard_id": t["shard_id"],
                              "from": t["from"], "to": t["to"]})
            except ApiError:
                pass

    def is_ready(self) -> bool:
        """Upstream's /readyz: synced with the cluster and every local replica healthy; once
        ready, a peer stays ready."""
        if self.ready:
            return True
        if not self.synced:
            return False
        me = str(self.peer_id)
        with self.lock:
            unhealthy = [1 for coll in self.meta["collections"].values() for replicas in coll["shards"].values()
                         if replicas.get(me) in UNHEALTHY]
        self.ready = not unhealthy
        return self.ready

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        leader = self.leader()
        with self.lock:
            return {
                "status": "enabled",
                "peer_id": self.peer_id,
                "peers": {p: {"uri": u} for p, u in sorted(self.meta["peers"].items(), key=lambda i: int(i[0]))},
                "raft_info": {"term": self.meta["term"], "commit": self.meta["commit"], "pending_operations": 0,
                              "leader": leader, "role": "Leader" if leader == self.peer_id else "Follower",
                              "is_voter": True},
                "consensus_thread_status": {"consensus_thread_status": "working", "last_update": self.last_update},
                "message_send_failures": copy.deepcopy(self.failures),
            }

    # -- p2p server ------------------------------------------------------------------------

    def p2p_routes(self) -> dict[str, Callable[[dict[str, Any], str], Any]]:
        return {
            "/p2p/status": lambda body, client: {"peer_id": self.peer_id, "commit": self.meta["commit"],
                                                 "term": self.meta["term"]},
            "/p2p/metadata/pull": lambda body, client: {"metadata": self.meta},
            "/p2p/metadata/push": lambda body, client: self.apply_metadata(body["metadata"]),
            "/p2p/propose": self._p2p_propose,
            "/p2p/join": self._p2p_join,
            "/p2p/shard/update": self._p2p_update,
            "/p2p/shard/read": self._p2p_read,
            "/p2p/shard/receive": self._p2p_receive,
        }

    def _p2p_propose(self, body: dict[str, Any], client: str) -> Any:
        if self.leader() != self.peer_id:
            result = self.propose(body["op"])  # leadership moved: forward
        else:
            result = self.lead(body["op"])
        return {"result": result, "metadata": self.meta}

    def _p2p_join(self, body: dict[str, Any], client: str) -> Any:
        """Upstream derives a joining peer's URI from the address it connects from when the
        peer gave none (https:// with cluster.p2p.enable_tls)."""
        host = f"[{client}]" if ":" in client else client
        uri = body.get("uri") or f"{'https' if self.tls_client else 'http'}://{host}:{int(body['p2p_port'])}"
        self.propose({"type": "add_peer", "peer_id": int(body["peer_id"]), "uri": uri})
        return {"metadata": self.meta, "uri": uri}

    def _p2p_update(self, body: dict[str, Any], client: str) -> Any:
        self.ensure_commit(body.get("commit"), body.get("sender"))
        return {"operation_id": self.local_update(body["collection"], int(body["shard_id"]), body["op"], body["op_id"])}

    def _p2p_read(self, body: dict[str, Any], client: str) -> Any:
        self.ensure_commit(body.get("commit"), body.get("sender"))
        return {"result": self.local_read(body["collection"], int(body["shard_id"]), body["op"])}

    def _p2p_receive(self, body: dict[str, Any], client: str) -> Any:
        self.ensure_commit(body.get("commit"), body.get("sender"))
        transfer = (body["collection"], int(body["shard_id"]), int(body["from"]), int(body["to"]))
        self.install(body["collection"], int(body["shard_id"]), body["data"], body["applied_ops"], transfer)
        return True

    def build_p2p_server(self, host: str, tls: ServerTls | None = None) -> ThreadingHTTPServer:
        """The p2p server; with ``tls`` every connection is TLS (handshaken in its own thread)
        and must present a client certificate the context accepts."""
        routes = self.p2p_routes()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "qdrant-lab-standin-p2p"

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                route = routes.get(urllib.parse.urlsplit(self.path).path)
                try:
                    if route is None:
                        raise ApiError(404, f"Not found: p2p route {self.path}")
                    status, answer = 200, route(json.loads(body or b"{}"), self.client_address[0])
                except ApiError as err:
                    status, answer = err.status, {"status": err.status, "message": err.message}
                except Exception as err:  # noqa: BLE001 - answer like a 500, keep serving
                    LOG.exception("p2p %s failed", self.path)
                    status, answer = 500, {"status": 500, "message": f"Service internal error: {err}"}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                LOG.debug("p2p %s %s", self.address_string(), format % args)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server_class = type("P2PServer", (PerConnectionTls, ThreadingHTTPServer),
                            {"address_family": family, "daemon_threads": True, "request_queue_size": 128,
                             "tls": tls})
        return server_class((host, self.p2p_port), Handler)
