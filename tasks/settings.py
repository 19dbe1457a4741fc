"""The one settings object, read once from ``INFERQ_*`` variables and passed in.

No other module reads the environment: a process builds ``Settings.from_env()`` at
its entry point and hands it down, which keeps tests hermetic (they build their own).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from tasks import constants as C
from tasks.errors import ConfigError
from tasks.kombu_layout import check_transport_options


def redact_url(url: str) -> str:
    """Hide the password of a ``redis://user:password@host`` URL for logs and status."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


#: The shortest heartbeat lease accepted (``lease_s``).
MIN_LEASE_S = 1.0

#: ``INFERQ_CONCURRENCY``'s value that has the worker choose its processes (``auto_concurrency``).
AUTO_CONCURRENCY = "auto"

#: Accepted values of ``redis_cert_reqs``; ``required`` is the default.
TLS_CERT_REQS = ("required", "none")

#: Settings that must be above zero: counts, sizes and durations.
POSITIVE_SETTINGS = (
    "cache_ttl_s",
    "threads",
    "concurrency",
    "max_payload_bytes",
    "max_message_bytes",
    "prefetch",
    "client_timeout_s",
    "wait_timeout_s",
    "gateway_max_body_bytes",
    "gateway_infer_timeout_s",
)


@dataclass(frozen=True)
class Settings:
    """Every tunable of inferq. Field docs are the README's settings table."""

    broker_url: str = C.DEFAULT_BROKER_URL
    #: Defaults to the broker URL; point it at a separate Redis (LRU, no AOF) in production.
    result_backend: str = ""
    models_dir: Path = field(default_factory=lambda: Path(C.DEFAULT_MODELS_DIR))
    cache_ttl_s: int = C.DEFAULT_CACHE_TTL_S
    #: XNNPACK / TensorFlow intra-op threads per worker process.
    threads: int = 1
    #: Worker processes started by ``inferq worker``.
    concurrency: int = 1
    #: ``INFERQ_CONCURRENCY=auto``: the worker plans processes, threads and batch size as
    #: ``--concurrency auto`` does. A flag beside ``concurrency`` rather than ``"auto"`` in
    #: it, so that ``concurrency`` stays an int for every reader; it holds its default
    #: until the plan replaces it. It has no variable of its own (see ``from_env``).
    auto_concurrency: bool = False
    max_payload_bytes: int = C.DEFAULT_MAX_PAYLOAD_BYTES
    #: A queued message bigger than this is answered ``PayloadTooLarge`` unread.
    max_message_bytes: int = C.DEFAULT_MAX_MESSAGE_BYTES
    visibility_timeout_s: int = C.DEFAULT_VISIBILITY_TIMEOUT_S
    #: A worker's heartbeat lease (seconds, at least 1): once a worker has not renewed it
    #: for this long (killed, frozen, cut off), other workers take back its messages.
    lease_s: float = C.DEFAULT_LEASE_S
    #: The longest a client call (submit, status, result, ping) may take, connecting and
    #: retrying included, before it raises ``BrokerUnavailable``; a call's ``timeout`` overrides it.
    client_timeout_s: float = C.DEFAULT_CLIENT_TIMEOUT_S
    #: How long ``wait``/``wait_all``/``result(wait=True)`` wait when given no ``timeout``.
    wait_timeout_s: float = C.DEFAULT_WAIT_TIMEOUT_S
    #: Producers refuse (``Overloaded``) when a model's queue holds more jobs; 0: no limit.
    max_queue_depth: int = 0
    prefetch: int = C.DEFAULT_PREFETCH
    #: Flower binds here; 127.0.0.1 unless a container publishes it (docker-compose).
    flower_address: str = "127.0.0.1"
    flower_port: int = C.DEFAULT_FLOWER_PORT
    flower_user: str = C.DEFAULT_FLOWER_USER
    flower_password: str = ""
    metrics_port: int = C.DEFAULT_METRICS_PORT
    #: Where workers serve ``/metrics``: 127.0.0.1 unless Prometheus scrapes them from
    #: another host or container (docker-compose sets 0.0.0.0 inside its network).
    metrics_address: str = "127.0.0.1"
    log_level: str = "INFO"
    #: For ``rediss://`` URLs: a PEM bundle of the CAs that sign the server's certificate
    #: (empty: the system's trust store).
    redis_ca_certs: str = ""
    #: For ``rediss://`` URLs to a Redis that asks for client certificates (mutual TLS):
    #: this client's certificate (PEM) and its key (empty: in the certificate file).
    redis_certfile: str = ""
    redis_keyfile: str = ""
    #: ``required`` (the server's certificate and host name are checked) or ``none``
    #: (encrypted but unauthenticated: anyone on the path can pose as the server).
    redis_cert_reqs: str = "required"
    #: The HTTP gateway's API keys, comma-separated (``INFERQ_API_KEYS``); empty: no keys
    #: asked for. A job made under one key is invisible to every other key.
    api_keys: str = ""
    #: The gateway binds here: 127.0.0.1 unless a container publishes it (docker-compose).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = C.DEFAULT_GATEWAY_PORT
    #: Largest request body the gateway reads; a bigger ``Content-Length`` is answered 413 unread.
    gateway_max_body_bytes: int = C.DEFAULT_GATEWAY_MAX_BODY_BYTES
    #: How long a synchronous ``/infer`` request waits for its result before 504.
    gateway_infer_timeout_s: float = C.DEFAULT_GATEWAY_INFER_TIMEOUT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "models_dir", Path(self.models_dir))
        if not self.result_backend:
            object.__setattr__(self, "result_backend", self.broker_url)
        for name in POSITIVE_SETTINGS:
            if getattr(self, name) <= 0:
                raise ConfigError(_not_positive(name, getattr(self, name)))
        for name in ("broker_url", "result_backend"):
            scheme = urlsplit(getattr(self, name)).scheme
            if scheme not in ("redis", "rediss", "unix"):
                raise ConfigError(
                    f"setting {name} must be a redis://, rediss:// or unix:// URL, got scheme {scheme!r}"
                )
            # One source of TLS options: the URL's would win in redis-py and lose in kombu.
            tls_params = sorted(
                k
                for k in parse_qs(urlsplit(getattr(self, name)).query, keep_blank_values=True)
                if k.startswith("ssl")
            )
            if tls_params:
                raise ConfigError(
                    f"setting {name} carries TLS options {tls_params}; set them with "
                    "INFERQ_REDIS_CA_CERTS, INFERQ_REDIS_CERTFILE, INFERQ_REDIS_KEYFILE, INFERQ_REDIS_CERT_REQS"
                )
        # A broker URL whose query moves kombu's keys (``?global_keyprefix=``) is refused
        # as the settings are read, before any process connects or loads a model.
        check_transport_options({}, self.broker_url)
        if not (MIN_LEASE_S <= self.lease_s < math.inf):
            # Under a second the heartbeat costs Redis more than five commands a second per
            # worker, and one slow beat would hand a live worker's jobs to another.
            raise ConfigError(
                f"setting lease_s must be a number of seconds >= {MIN_LEASE_S:g}, got {self.lease_s}"
            )
        if self.redis_cert_reqs not in TLS_CERT_REQS:
            raise ConfigError(
                f"setting redis_cert_reqs must be one of {list(TLS_CERT_REQS)}, got {self.redis_cert_reqs!r}"
            )
        if self.redis_keyfile and not self.redis_certfile:
            raise ConfigError("setting redis_keyfile needs redis_certfile (the certificate it belongs to)")

    @property
    def api_key_list(self) -> tuple[str, ...]:
        """The configured API keys (``api_keys`` split on commas, blanks dropped)."""
        return tuple(k.strip() for k in self.api_keys.split(",") if k.strip())

    @property
    def inflight_ttl_s(self) -> int:
        """How long a queued or running job's claim and ``STARTED`` state live.

        Long enough to cover a dead worker's visibility timeout twice over and a deep
        queue's wait; if a job's message is lost anyway, its input can be submitted
        again after this long (a claim that lapses early only costs a duplicate run).
        """
        return max(600, 2 * self.visibility_timeout_s + 60)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``INFERQ_*`` variables (``environ`` defaults to ``os.environ``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        read_from: dict[str, str] = {}  # field -> the variable its value came from
        for f in cls.__dataclass_fields__.values():
            if f.name == "auto_concurrency":
                continue  # set by INFERQ_CONCURRENCY=auto, below
            var = f"INFERQ_{f.name.upper()}"
            # Accept the short, conventional name too.
            if var not in env and f.name == "cache_ttl_s":
                var = "INFERQ_CACHE_TTL"
            if var not in env:
                continue
            read_from[f.name] = var
            if f.name == "concurrency":
                values.update(_coerce_concurrency(var, env[var]))
                continue
            values[f.name] = _coerce(var, f.type, env[var])
        given = {k: v for k, v in overrides.items() if v is not None}
        # Checked here too, where the variable is known, so that the message names it;
        # ``__post_init__`` refuses the same values from anywhere else by field name alone.
        for name, var in read_from.items():
            if name in POSITIVE_SETTINGS and name not in given and name in values and values[name] <= 0:
                raise ConfigError(_not_positive(name, values[name], var))
        if "concurrency" in given:
            # A number on the command line (``--concurrency N``) wins over INFERQ_CONCURRENCY=auto.
            values["auto_concurrency"] = False
        values.update(given)
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def public(self) -> dict[str, Any]:
        """Settings as shown to people: URLs without passwords, no secrets."""
        out = asdict(self)
        out["broker_url"] = redact_url(self.broker_url)
        out["result_backend"] = redact_url(self.result_backend)
        out["models_dir"] = str(self.models_dir)
        out["flower_password"] = "***" if self.flower_password else ""
        out["api_keys"] = f"*** ({len(self.api_key_list)} keys)" if self.api_keys else ""
        return out

    def env(self) -> dict[str, str]:
        """The ``INFERQ_*`` variables that rebuild these settings in a child process."""
        out = {
            f"INFERQ_{k.upper()}": str(getattr(self, k))
            for k in self.__dataclass_fields__
            if k != "auto_concurrency"
        }
        if self.auto_concurrency:
            out["INFERQ_CONCURRENCY"] = AUTO_CONCURRENCY
        return out


def _coerce_concurrency(var: str, raw: str) -> dict[str, Any]:
    """``INFERQ_CONCURRENCY``: ``auto`` (as ``--concurrency auto``) or a number of processes.

    Its own reader because its message must say both forms it takes; a number below 1
    is left to ``from_env``, which refuses it as it does every other count.
    """
    if raw.strip() == AUTO_CONCURRENCY:
        return {"auto_concurrency": True}
    try:
        return {"concurrency": int(raw)}
    except ValueError:
        raise ConfigError(f"{var} must be a positive integer or {AUTO_CONCURRENCY!r}, got {raw!r}") from None


def _not_positive(name: str, value: Any, var: str | None = None) -> str:
    """The message for a setting at or below zero, naming its variable when it came from one."""
    where = f" ({var})" if var else ""
    return f"setting {name}{where} must be > 0, got {value}"


def _coerce(var: str, typ: Any, raw: str) -> Any:
    typ_name = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    if typ_name == "int":
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{var} must be an integer, got {raw!r}") from None
    if typ_name == "float":
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var} must be a number, got {raw!r}") from None
    if typ_name == "Path":
        return Path(raw)
    return raw
