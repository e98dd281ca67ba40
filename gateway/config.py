"""Gateway configuration: the declarative route table (YAML) plus environment overrides.

Everything here is parsed once (at start and on SIGHUP) into plain objects that the hot path
only reads. See docs/gateway.md for every setting.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_ROUTES = Path(__file__).resolve().parent / "routes.yaml"
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
# Paths of the services that must never be reachable through the gateway, whatever the table says.
ALWAYS_BLOCKED = ("/internal", "/metrics", "/health", "/api/schema")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, eq=False)
class Bucket:
    """A token bucket: `burst` tokens, refilled at `rate` tokens per second. Hashed by identity (a
    C-level hash: the gateway looks up its limiter arguments by bucket on every request)."""

    rate: float
    burst: int


@dataclass(frozen=True)
class RateLimit:
    name: str  # Redis key namespace: routes sharing a name share buckets
    ip: Bucket | None
    user: Bucket | None


@dataclass(frozen=True)
class Limits:
    """Admission control for one upstream service (docs/gateway.md, "Concurrency limit and queue")."""

    max_outstanding: int  # requests in flight per replica; 0 = no limit
    queue_timeout: float  # seconds a request may wait for a free replica (503 after)
    max_queue: int  # requests waiting per service (503 at once beyond)


DEFAULT_LIMITS = Limits(max_outstanding=0, queue_timeout=5.0, max_queue=1000)


@dataclass
class Route:
    prefix: str
    service: str
    auth: bool
    methods: frozenset[str] | None
    exact: bool
    timeout: float
    ratelimit: RateLimit | None
    max_body: int
    # per-route precomputed bytes for the hot path
    label: str = ""
    label_json: str = ""

    def __post_init__(self):
        import json

        self.label_json = json.dumps(self.label)

    def matches(self, path: str, method: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        p = self.prefix
        if self.exact:
            return path == p
        if path == p:
            return True
        if not path.startswith(p):
            return False
        # segment boundary: /api/v1/posts matches /api/v1/posts/1 but not /api/v1/postsx
        return p.endswith("/") or path[len(p)] == "/"


@dataclass
class Settings:
    host: str
    port: int
    admin_host: str
    admin_port: int
    workers: int
    upstreams: dict[str, list[str]]
    limits: dict[str, Limits]  # per upstream service (every name in upstreams)
    routes: list[Route]
    blocked: tuple[str, ...]
    trusted_proxies: list
    max_body: int
    connect_timeout: float
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    drain_delay: float
    drain_timeout: float
    health_interval: float
    health_path: str
    dns_interval: float
    hosts_file: str | None
    eject_after: int
    eject_base: float
    eject_max: float
    max_ejection_percent: int
    panic_threshold: float
    retry_budget: float
    retry_min: float
    pool_size: int
    upstream_idle_timeout: float
    redis_url: str | None
    redis_timeout: float
    ratelimit_prefix: str
    jwt_issuer: str
    jwt_audience: str
    jwt_leeway: float
    jwks_url: str | None
    jwks_service: str
    jwks_path: str
    access_log: bool
    routes_file: str
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API (empty: CORS off)
    cors_allow_headers: str = ""
    cors_max_age: int = 600
    revocation_url: str | None = None  # Redis holding the access-token revocation set (None: not checked)
    revocation_cache: float = 1.0  # seconds a "not revoked" answer is reused per token
    ratelimit_lease: float = 0.25  # seconds a worker may spend tokens it leased from a Redis bucket
    extra: dict = field(default_factory=dict)


def _float(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return float(default)
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def _int(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return int(default)
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def _bucket(spec, where) -> Bucket | None:
    if spec is None or spec is False:
        return None
    if not isinstance(spec, dict) or "rate" not in spec or "burst" not in spec:
        raise ConfigError(f"{where}: a bucket needs rate (tokens/second) and burst")
    rate, burst = float(spec["rate"]), int(spec["burst"])
    if rate <= 0 or burst < 1:
        raise ConfigError(f"{where}: rate must be > 0 and burst >= 1")
    return Bucket(rate, burst)


def _ratelimit(spec, name, where) -> RateLimit | None:
    if spec is None or spec is False or spec == "off":
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: ratelimit must be a mapping or off")
    ip = _bucket(spec.get("ip"), where + ".ip")
    user = _bucket(spec.get("user"), where + ".user")
    if ip is None and user is None:
        return None
    return RateLimit(str(spec.get("name", name)), ip, user)


def parse_upstreams_env(raw: str) -> dict[str, list[str]]:
    """`users=127.0.0.1:8101,127.0.0.1:8102;feed=dns:feed:8000` -> {service: [addresses]}."""
    out: dict[str, list[str]] = {}
    for part in raw.split(";"):
        part = part.strip()
        if not part:
            continue
        name, sep, addrs = part.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"GATEWAY_UPSTREAMS: expected service=host:port[,host:port], got {part!r}")
        out[name.strip()] = [a.strip() for a in addrs.split(",") if a.strip()]
    return out


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$|^https?://\[[0-9a-fA-F:]+\](:\d{1,5})?$")
# request headers a browser may send cross-origin (Access-Control-Allow-Headers)
DEFAULT_CORS_ALLOW_HEADERS = "Authorization, Content-Type, Idempotency-Key, If-None-Match, If-Match, X-Request-ID"
# response headers a browser script may read besides the CORS-safelisted ones
CORS_EXPOSE_HEADERS = (
    "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, X-Request-ID, ETag, Location, Idempotent-Replayed"
)

_ADDR = re.compile(r"^(dns:)?([A-Za-z0-9.\-_]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$")


def check_address(addr: str, where: str) -> None:
    if not _ADDR.match(addr):
        raise ConfigError(f"{where}: bad upstream address {addr!r} (host:port or dns:name:port)")


def _limits(spec: dict, base: Limits, where: str) -> Limits:
    try:
        lim = Limits(
            max_outstanding=int(spec.get("max_outstanding", base.max_outstanding)),
            queue_timeout=float(spec.get("queue_timeout", base.queue_timeout)),
            max_queue=int(spec.get("max_queue", base.max_queue)),
        )
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: max_outstanding and max_queue must be integers, queue_timeout a number") from None
    if lim.max_outstanding < 0 or lim.max_queue < 0 or lim.queue_timeout <= 0:
        raise ConfigError(f"{where}: max_outstanding and max_queue must be >= 0, queue_timeout > 0")
    return lim


def load(env: dict | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    routes_file = env.get("GATEWAY_ROUTES") or str(DEFAULT_ROUTES)
    try:
        doc = yaml.safe_load(Path(routes_file).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read route table {routes_file}: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{routes_file}: top level must be a mapping")

    defaults = doc.get("defaults") or {}
    max_body = _int(env, "GATEWAY_MAX_BODY", defaults.get("max_body", 1 << 20))
    default_timeout = float(defaults.get("timeout", 10))
    default_rl = defaults.get("ratelimit")

    # concurrency limit and queue: the file's defaults, then the environment, then per upstream
    base = _limits(defaults, DEFAULT_LIMITS, f"{routes_file}: defaults")
    base = Limits(
        max_outstanding=_int(env, "GATEWAY_MAX_OUTSTANDING", base.max_outstanding),
        queue_timeout=_float(env, "GATEWAY_QUEUE_TIMEOUT", base.queue_timeout),
        max_queue=_int(env, "GATEWAY_MAX_QUEUE", base.max_queue),
    )
    base = _limits({}, base, "GATEWAY_MAX_OUTSTANDING / GATEWAY_QUEUE_TIMEOUT / GATEWAY_MAX_QUEUE")
    upstreams: dict[str, list[str]] = {}
    limits: dict[str, Limits] = {}
    for name, spec in (doc.get("upstreams") or {}).items():
        replicas = spec.get("replicas", []) if isinstance(spec, dict) else spec
        upstreams[str(name)] = [str(a) for a in (replicas or [])]
        limits[str(name)] = _limits(spec if isinstance(spec, dict) else {}, base, f"{routes_file}: upstreams.{name}")
    if env.get("GATEWAY_UPSTREAMS"):
        upstreams.update(parse_upstreams_env(env["GATEWAY_UPSTREAMS"]))
    for name in upstreams:
        limits.setdefault(name, base)
    for name, addrs in upstreams.items():
        for a in addrs:
            check_address(a, f"upstream {name}")

    routes: list[Route] = []
    for i, spec in enumerate(doc.get("routes") or []):
        where = f"{routes_file}: routes[{i}]"
        if not isinstance(spec, dict) or "prefix" not in spec or "service" not in spec:
            raise ConfigError(f"{where}: needs prefix and service")
        prefix = str(spec["prefix"])
        if not prefix.startswith("/"):
            raise ConfigError(f"{where}: prefix must start with /")
        auth = spec.get("auth", "required")
        if auth not in ("required", "none"):
            raise ConfigError(f"{where}: auth must be required or none")
        methods = spec.get("methods")
        if methods is not None:
            methods = frozenset(str(m).upper() for m in methods)
            if not methods <= METHODS:
                raise ConfigError(f"{where}: unknown method in {sorted(methods)}")
        rl_spec = spec.get("ratelimit", default_rl)
        label = str(spec.get("name") or (prefix if methods is None else f"{'|'.join(sorted(methods))} {prefix}"))
        routes.append(
            Route(
                prefix=prefix,
                service=str(spec["service"]),
                auth=auth == "required",
                methods=methods,
                exact=bool(spec.get("exact", False)),
                timeout=float(spec.get("timeout", default_timeout)),
                ratelimit=_ratelimit(rl_spec, label if "ratelimit" in spec else "default", where),
                max_body=int(spec.get("max_body", max_body)),
                label=label,
            )
        )
    # Longest prefix first; among equal prefixes, method-restricted routes first.
    routes.sort(key=lambda r: (-len(r.prefix), r.methods is None))

    blocked = tuple(dict.fromkeys(list(ALWAYS_BLOCKED) + [str(b).rstrip("/") for b in doc.get("blocked") or []]))

    trusted = []
    for cidr in (env.get("GATEWAY_TRUSTED_PROXIES") or "").replace(";", ",").split(","):
        if cidr.strip():
            try:
                trusted.append(ipaddress.ip_network(cidr.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"GATEWAY_TRUSTED_PROXIES: bad CIDR {cidr!r}") from None

    origins = []
    for origin in (env.get("GATEWAY_CORS_ORIGINS") or "").split(","):
        origin = origin.strip().rstrip("/")
        if not origin:
            continue
        if not _ORIGIN.match(origin):
            raise ConfigError(f"GATEWAY_CORS_ORIGINS: {origin!r} is not an origin (scheme://host[:port])")
        origins.append(origin.lower())
    allow_headers = env.get("GATEWAY_CORS_ALLOW_HEADERS") or DEFAULT_CORS_ALLOW_HEADERS
    if not re.fullmatch(r"[A-Za-z0-9-]+(\s*,\s*[A-Za-z0-9-]+)*", allow_headers.strip()):
        raise ConfigError("GATEWAY_CORS_ALLOW_HEADERS: a comma-separated list of header names")
    revocation = env.get("GATEWAY_REVOCATION", "1") not in ("0", "false", "no", "off")
    revocation_cache = _float(env, "GATEWAY_REVOCATION_CACHE", 1.0)
    if revocation_cache < 0:
        raise ConfigError("GATEWAY_REVOCATION_CACHE must be >= 0")
    ratelimit_lease = _float(env, "GATEWAY_RATELIMIT_LEASE", 0.25)
    if not 0 <= ratelimit_lease <= 10:
        raise ConfigError("GATEWAY_RATELIMIT_LEASE must be between 0 and 10 seconds")

    jwks_url = env.get("JWKS_URL") or None
    jwks_doc = doc.get("jwks")
    jwks: dict = jwks_doc if isinstance(jwks_doc, dict) else {}
    redis_url = env.get("REDIS_URL") or None
    max_ejection_percent = _int(env, "GATEWAY_MAX_EJECTION_PERCENT", 10)
    panic_threshold = _float(env, "GATEWAY_PANIC_THRESHOLD", 0.0)
    for name, value in (("GATEWAY_MAX_EJECTION_PERCENT", max_ejection_percent), ("GATEWAY_PANIC_THRESHOLD", panic_threshold)):
        if not 0 <= value <= 100:
            raise ConfigError(f"{name} must be a percentage (0-100), got {value:g}")
    return Settings(
        host=env.get("GATEWAY_HOST") or "127.0.0.1",
        port=_int(env, "GATEWAY_PORT", 8000),
        admin_host=env.get("GATEWAY_ADMIN_HOST") or env.get("GATEWAY_HOST") or "127.0.0.1",
        admin_port=_int(env, "GATEWAY_ADMIN_PORT", 8001),
        workers=max(1, _int(env, "GATEWAY_WORKERS", 1)),
        upstreams=upstreams,
        limits=limits,
        routes=routes,
        blocked=blocked,
        trusted_proxies=trusted,
        max_body=max_body,
        connect_timeout=_float(env, "GATEWAY_CONNECT_TIMEOUT", 2.0),
        header_timeout=_float(env, "GATEWAY_HEADER_TIMEOUT", 10.0),
        body_timeout=_float(env, "GATEWAY_BODY_TIMEOUT", 30.0),
        keepalive_timeout=_float(env, "GATEWAY_KEEPALIVE_TIMEOUT", 75.0),
        drain_delay=_float(env, "GATEWAY_DRAIN_DELAY", 2.0),
        drain_timeout=_float(env, "GATEWAY_DRAIN_TIMEOUT", 30.0),
        health_interval=_float(env, "GATEWAY_HEALTH_INTERVAL", 5.0),
        health_path=env.get("GATEWAY_HEALTH_PATH") or "/health/ready",
        dns_interval=_float(env, "GATEWAY_DNS_INTERVAL", 5.0),
        hosts_file=env.get("GATEWAY_HOSTS_FILE") or None,
        eject_after=_int(env, "GATEWAY_EJECT_AFTER", 3),
        eject_base=_float(env, "GATEWAY_EJECT_BASE", 5.0),
        eject_max=_float(env, "GATEWAY_EJECT_MAX", 120.0),
        max_ejection_percent=max_ejection_percent,
        panic_threshold=panic_threshold,
        retry_budget=_float(env, "GATEWAY_RETRY_BUDGET", 0.2),
        retry_min=_float(env, "GATEWAY_RETRY_MIN", 20),
        pool_size=_int(env, "GATEWAY_POOL_SIZE", 128),
        upstream_idle_timeout=_float(env, "GATEWAY_UPSTREAM_IDLE_TIMEOUT", 60.0),
        redis_url=redis_url,
        redis_timeout=_float(env, "GATEWAY_REDIS_TIMEOUT", 0.25),
        ratelimit_prefix=env.get("GATEWAY_RATELIMIT_PREFIX") or "gw:rl:",
        jwt_issuer=env.get("JWT_ISSUER") or "social-users",
        jwt_audience=env.get("JWT_AUDIENCE") or "social-api",
        jwt_leeway=_float(env, "JWT_LEEWAY", 5),
        jwks_url=jwks_url,
        jwks_service=str(jwks.get("service", "users")),
        jwks_path=str(jwks.get("path", "/.well-known/jwks.json")),
        access_log=(env.get("GATEWAY_ACCESS_LOG", "1") not in ("0", "false", "no", "off")),
        routes_file=routes_file,
        cors_origins=tuple(dict.fromkeys(origins)),
        cors_allow_headers=", ".join(h.strip() for h in allow_headers.split(",")),
        cors_max_age=_int(env, "GATEWAY_CORS_MAX_AGE", 600),
        revocation_url=((env.get("REVOCATION_REDIS_URL") or redis_url) if revocation else None),
        revocation_cache=revocation_cache,
        ratelimit_lease=ratelimit_lease,
    )
