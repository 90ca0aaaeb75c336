"""The proxy's settings and constants."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..backends.openai_http import normalize_base_url
from ..config import opt
from ..errors import ConfigError
from ..names import SERVED_SYSTEMS
from ..tenants import DEFAULT_TENANT, check_tenant

EMBEDDED_MODEL = "unolearn"
SYSTEM_HEADER = "x-unolearn-system"
ACTIONS = ("like", "dislike", "copy", "regenerate", "edit")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """Settings of the routing proxy."""

    upstream: str | None = opt(None, "The OpenAI-compatible model server answers are forwarded to (e.g. vLLM "
                                     "at http://127.0.0.1:8000/v1, started with --enable-lora); None: embedded "
                                     "mode, answers come from the workspace's configured chat backend.")
    host: str = opt("127.0.0.1", "Interface to listen on.")
    port: int = opt(8400, "Port to listen on (0: any free port).")
    system: str = opt("uno", "Default system: 'uno' (expert, critic or base), 'uno-single' (expert or base), "
                             "'uno-guided' (the best validated path, the rulebook guide among them) or 'base'; "
                             "a request overrides it with the header X-Unolearn-System.")
    api_key: str | None = opt(None, "Clients must send 'Authorization: Bearer <key>' (default: "
                                    "$UNOLEARN_SERVE_KEY; empty: no key).")
    keys: dict | None = opt(None, "Keys of tenants: a mapping of API key → tenant name (null: the default "
                                  "tenant). A request's key decides its tenant: the plan that routes it, the store "
                                  "that records it, the answers it may give feedback on. api_key, if set, is a key "
                                  "of the default tenant.")
    keys_file: str | None = opt(None, "A YAML or JSON file holding the same mapping as keys (kept apart from "
                                      "config.yaml, e.g. mounted from a secret store); read at start.")
    insecure: bool = opt(False, "Allow serving on an interface other than loopback without an API key.")
    upstream_api_key: str | None = opt(None, "Key sent to the upstream (default: $UNOLEARN_API_KEY, then "
                                             "$OPENAI_API_KEY; empty: none).")
    max_body_bytes: int = opt(1_000_000, "Largest request body accepted (413 above).")
    max_messages: int = opt(256, "Most messages in one chat request (413 above).")
    upstream_timeout_s: float = opt(120.0, "Timeout of one upstream call (connect, between received bytes, "
                                           "and waiting for a free connection).")
    upstream_connections: int = opt(256, "Most connections open to the upstream, busy or idle.")
    load_adapters: bool = opt(False, "Load every adapter the served plan uses into the upstream, at start and before "
                                     "a newer plan is swapped in, and unload those no longer planned "
                                     "(vLLM POST /v1/load_lora_adapter).")
    reload_interval_s: float = opt(10.0, "Look for a newly published plan this often, and serve it without a "
                                         "restart (seconds; 0: only on POST /v1/admin/reload).")
    workers: int = opt(1, "Server processes sharing the port (upstream mode only: each one is a full proxy with "
                          "its own writer; /metrics then counts the worker that answers the scrape).")
    feedback_per_response: int = opt(5, "Most feedbacks accepted for one response (429 after that).")
    write_batch: int = opt(512, "Most served rows and feedbacks written in one transaction.")
    write_linger_s: float = opt(0.02, "The writer waits this long after a first queued row for more to join its "
                                      "transaction (fewer commits under load; a feedback answer waits at most this "
                                      "much longer).")

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get("UNOLEARN_SERVE_KEY") or None
        self.api_key = self.api_key or None
        self.tenant_keys()  # a malformed map or an unreadable file is an error at start
        if self.upstream is not None:
            self.upstream = normalize_base_url(self.upstream)
        if self.system not in SERVED_SYSTEMS:
            raise ConfigError(f"serve.system: {self.system!r} is not one of {', '.join(SERVED_SYSTEMS)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError("serve.port must be between 0 and 65535")
        if self.max_body_bytes < 1024 or self.max_messages < 1 or self.write_batch < 1 or self.write_linger_s < 0:
            raise ConfigError("serve.max_body_bytes ≥ 1024, max_messages ≥ 1, write_batch ≥ 1 and "
                              "write_linger_s ≥ 0 are required")
        if self.feedback_per_response < 1:
            raise ConfigError("serve.feedback_per_response must be ≥ 1")
        if self.reload_interval_s < 0:
            raise ConfigError("serve.reload_interval_s must be ≥ 0 (0: reload only on POST /v1/admin/reload)")
        if self.upstream_timeout_s <= 0 or self.upstream_connections < 1:
            raise ConfigError("serve.upstream_timeout_s must be > 0 and upstream_connections ≥ 1")
        if self.load_adapters and self.upstream is None:
            raise ConfigError("serve.load_adapters needs an upstream")
        if self.workers < 1 or (self.workers > 1 and self.upstream is None):
            raise ConfigError("serve.workers must be ≥ 1, and more than 1 needs an upstream (each worker would "
                              "load the embedded model)")

    def tenant_keys(self) -> dict[str, str]:
        """Every accepted API key → the tenant it serves (empty: no key required, every request is the default
        tenant's): ``api_key``, then ``keys``, then ``keys_file``; a ConfigError names a malformed entry."""
        found = {self.api_key: DEFAULT_TENANT} if self.api_key else {}
        found.update(_key_map(self.keys, "serve.keys"))
        if self.keys_file:
            path = Path(self.keys_file)
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"serve.keys_file {path}: cannot read: {' '.join(str(e).split())}") from e
            found.update(_key_map(data, f"serve.keys_file {path}"))
        return found

    def tenants(self) -> list[str]:
        """The tenants the keys serve: the default one first."""
        return tenants_of(self.tenant_keys())

    def check_exposure(self) -> None:
        """Refuse to listen beyond this machine without an API key, unless ``insecure`` says so."""
        if not self.tenant_keys() and not self.insecure and not is_loopback(self.host):
            raise ConfigError(f"serve.host {self.host!r} is reachable from other machines and no API key is set: "
                              "set UNOLEARN_SERVE_KEY (or serve: {api_key}), or pass --insecure")


def tenants_of(keys: dict[str, str]) -> list[str]:
    """The tenants a key → tenant map serves: the default one first (it is served without keys too)."""
    return [DEFAULT_TENANT, *sorted(set(keys.values()) - {DEFAULT_TENANT})]


def _key_map(data: object, where: str) -> dict[str, str]:
    """A key → tenant mapping checked: keys non-empty strings, tenants names or null (the default tenant)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of API key → tenant")
    out = {}
    for key, tenant in data.items():
        if not isinstance(key, str) or not key.strip() or any(c.isspace() for c in key):
            raise ConfigError(f"{where}: an API key must be a non-empty string without spaces, got {str(key)[:8]!r}…")
        try:
            out[key] = DEFAULT_TENANT if tenant is None else check_tenant(tenant, "tenant")
        except ValueError as e:
            raise ConfigError(f"{where}: the key {key[:4]}…: {e}") from None
    return out
