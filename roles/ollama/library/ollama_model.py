#!/usr/bin/python
# ruff: noqa: E402 - Ansible's module layout puts DOCUMENTATION/EXAMPLES/RETURN before the imports.
"""Ansible module: converge one Ollama model to a declared state over the HTTP API.

The logic (OllamaApi, ensure_model) is importable without Ansible so the project's fast
tests can drive it against the lab stand-in; main() is the thin Ansible wrapper.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: ollama_model
short_description: Pull, pin by digest or delete an Ollama model through the Ollama API
description:
  - Compares a model with what C(GET /api/tags) reports and pulls it (C(POST /api/pull),
    NDJSON progress stream), deletes it (C(DELETE /api/delete)) or leaves it alone.
  - With I(digest) set, a present model whose manifest digest differs is pulled again; when the
    freshly pulled model still has another digest the module deletes it again (so nothing
    serves an unverified model under that name) and fails, naming the model, the pinned and
    the actual digest (the registry now serves something else than was pinned).
  - Reports C(changed) only when a model was added, replaced or removed.
  - Talks plain HTTP with the Python standard library; run it on the Ollama host against the
    address the server binds to (Ollama has no authentication of its own).
version_added: "1.0.0"
author: QueryGPT infrastructure
options:
  name:
    description:
      - Model name, C([namespace/]model[:tag]); the tag defaults to C(latest).
    type: str
    required: true
  digest:
    description:
      - sha256 of the model's manifest as C(/api/tags) reports it, optionally prefixed C(sha256:).
      - Empty means any digest is accepted (the QueryGPT role always pins one for a present model).
    type: str
    default: ""
  state:
    description: C(present) pulls the model when missing (or when its digest differs from I(digest)), C(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  api_url:
    description: Base URL of the Ollama API.
    type: str
    default: http://127.0.0.1:11434
  timeout:
    description: Seconds a request (or a pull between two progress lines) may stall before the module fails.
    type: int
    default: 600
attributes:
  check_mode:
    support: full
    description: Reports what would be pulled or deleted without doing it.
  diff_mode:
    support: none
notes:
  - The model names in failure messages refer to the role variable C(ollama_models), which is what
    the QueryGPT C(ollama) role feeds this module.
"""

EXAMPLES = r"""
- name: Pull the embedding model (any digest)
  ollama_model:
    name: all-minilm:l6-v2
    api_url: http://127.0.0.1:11434

- name: Pin the generation model to a manifest digest
  ollama_model:
    name: qwen2.5-coder:1.5b
    digest: sha256:6a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b
    api_url: http://127.0.0.1:11434

- name: Remove a model nobody uses any more
  ollama_model:
    name: nomic-embed-text
    state: absent
    api_url: http://127.0.0.1:11434
"""

RETURN = r"""
name:
  description: The model name as Ollama lists it (tag filled in).
  returned: always
  type: str
  sample: all-minilm:latest
operation:
  description: What was (or, in check mode, would be) done.
  returned: always
  type: str
  sample: pulled
  choices: [none, pulled, replaced, deleted]
digest_before:
  description: Manifest digest before the module ran ("" when the model was absent).
  returned: always
  type: str
  sample: 1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef
digest:
  description: Manifest digest afterwards ("" when absent; in check mode the digest before).
  returned: always
  type: str
  sample: 1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef
"""

import json
import re
import urllib.error
import urllib.request
from typing import Any, Callable, Dict, Iterator, Optional

NAME_RE = re.compile(
    r"^([A-Za-z0-9][A-Za-z0-9._-]*/){0,2}[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,79})?$"
)
DIGEST_RE = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"


class ModelError(Exception):
    """A failure the operator must act on; the message says which model and what to do."""


def normalize_name(name: str) -> str:
    """The form /api/tags lists: default registry and namespace dropped, tag filled in, lower case."""
    if not NAME_RE.match(name or ""):
        raise ModelError(
            "ollama_models: %r is not a model name like all-minilm, qwen2.5-coder:1.5b or "
            "namespace/model:tag" % name
        )
    parts = name.lower().split("/")
    if ":" not in parts[-1]:
        parts[-1] += ":latest"
    if len(parts) == 3 and parts[0] == DEFAULT_HOST:
        parts = parts[1:]
    if len(parts) == 2 and parts[0] == DEFAULT_NAMESPACE:
        parts = parts[1:]
    return "/".join(parts)


def normalize_digest(digest: str) -> str:
    """Bare lower-case hex, as /api/tags reports it; "" stays "" (no pin)."""
    if not digest:
        return ""
    if not DIGEST_RE.match(digest):
        raise ModelError(
            "ollama_models: digest %r is not a sha256 (64 hex digits, optionally prefixed sha256:)" % digest
        )
    return digest.lower().split(":", 1)[-1]


class OllamaApi:
    """The few Ollama endpoints model management needs, over stdlib urllib (no proxies)."""

    def __init__(self, base_url: str, timeout: float = 600) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        # Never route the private API through an environment proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise ModelError("%s %s: %s" % (method, path, _error_text(exc))) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ModelError(
                "cannot reach the Ollama API at %s (%s %s): %s" % (self.base_url, method, path, exc)
            ) from None

    def digests(self) -> Dict[str, str]:
        """{listed name (lower case): manifest digest} from GET /api/tags."""
        with self._request("GET", "/api/tags") as response:
            payload = json.load(response)
        return {
            str(m.get("name") or m.get("model")).lower(): str(m.get("digest", "")).lower()
            for m in payload.get("models") or []
        }

    def pull(self, name: str) -> Iterator[Dict[str, Any]]:
        """Progress objects of POST /api/pull; raise ModelError on an error line or a broken stream."""
        with self._request("POST", "/api/pull", {"model": name, "stream": True}) as response:
            for raw in response:
                line = raw.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    raise ModelError("pull %s: unreadable progress line %r" % (name, line[:200])) from None
                if event.get("error"):
                    raise ModelError(str(event["error"]))
                yield event

    def delete(self, name: str) -> None:
        with self._request("DELETE", "/api/delete", {"model": name}):
            pass


def _error_text(exc: urllib.error.HTTPError) -> str:
    """Ollama answers errors as {"error": "..."}; fall back to the status line."""
    try:
        body = exc.read().decode("utf-8", "replace")
        return str(json.loads(body).get("error") or body) or "HTTP %s" % exc.code
    except (ValueError, AttributeError, OSError):
        return "HTTP %s %s" % (exc.code, exc.reason)


def _pull(api: OllamaApi, name: str, log: Callable[[str], None]) -> None:
    last = ""
    try:
        for event in api.pull(name):
            last = str(event.get("status", last))
    except ModelError as exc:
        hint = ""
        if "file does not exist" in str(exc) or "not found" in str(exc):
            hint = " (no such model or tag in the registry: check the name in ollama_models)"
        raise ModelError("ollama_models: pulling %r failed: %s%s" % (name, exc, hint)) from None
    if last != "success":
        raise ModelError("ollama_models: pulling %r ended without success (last status %r)" % (name, last))
    log("pulled %s" % name)


def ensure_model(
    api: OllamaApi,
    name: str,
    state: str = "present",
    digest: str = "",
    check_mode: bool = False,
    log: Callable[[str], None] = lambda _msg: None,
) -> Dict[str, Any]:
    """Converge one model; return {name, changed, operation, digest_before, digest}.

    Raises ModelError with a message naming the model (and ollama_models) on any failure.
    """
    listed = normalize_name(name)
    pin = normalize_digest(digest)
    before = api.digests().get(listed, "")
    result = {"name": listed, "changed": False, "operation": "none", "digest_before": before, "digest": before}

    if state == "absent":
        if before:
            result.update(changed=True, operation="deleted", digest="")
            if not check_mode:
                api.delete(listed)
        return result
    if state != "present":
        raise ModelError("ollama_models: state of %r must be present or absent, not %r" % (name, state))

    if before and (not pin or before == pin):
        return result
    action = "replaced" if before else "pulled"
    if check_mode:
        result.update(changed=True, operation=action)
        return result

    _pull(api, listed, log)
    after = api.digests().get(listed, "")
    if not after:
        raise ModelError("ollama_models: %r was pulled but /api/tags does not list it" % listed)
    if pin and after != pin:
        # Never leave an unverified model behind under the pinned name: the backend would use it.
        try:
            api.delete(listed)
            removed = "It was removed again, so nothing serves an unverified model"
        except ModelError as exc:
            removed = "Removing it failed too (%s): delete it by hand (ollama rm %s)" % (exc, listed)
        raise ModelError(
            "ollama_models: DIGEST MISMATCH for %r: pinned sha256:%s but the registry serves sha256:%s. "
            "%s. The model changed upstream, or the pin is wrong: compare the digest /api/tags reports "
            "on a trusted host with the pin, then update the digest in ollama_models (inventories/<env>/"
            "group_vars/all/pins.yml)." % (listed, pin, after, removed)
        )
    result.update(changed=after != before, operation=action if after != before else "none", digest=after)
    return result


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            digest=dict(type="str", default=""),
            state=dict(type="str", default="present", choices=["present", "absent"]),
            api_url=dict(type="str", default="http://127.0.0.1:11434"),
            timeout=dict(type="int", default=600),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        result = ensure_model(
            OllamaApi(params["api_url"], params["timeout"]),
            params["name"],
            state=params["state"],
            digest=params["digest"] or "",
            check_mode=module.check_mode,
            log=module.log,
        )
    except ModelError as exc:
        module.fail_json(msg=str(exc), name=params["name"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
