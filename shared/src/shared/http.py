"""Base client for synchronous service-to-service HTTP calls.

Every typed downstream client in the services (``UsersClient`` in feed, and so on)
subclasses :class:`ServiceClient`, calls :meth:`ServiceClient.get_json`,
:meth:`ServiceClient.post_json` or :meth:`ServiceClient.request`, and turns the
JSON into dataclasses/TypedDicts. This module is mechanism only: no endpoint
knows anything about users, posts or notifications.

One client, one pool
    A ``ServiceClient`` owns one long-lived ``httpx.Client`` for its downstream, so
    connections are reused across requests and threads (gunicorn gthread workers
    share it; httpx's pool is thread-safe and the rest of this class is immutable
    apart from the lock-protected breaker). Idle connections are closed after
    ``keepalive_expiry`` (1.5 s by default), below gunicorn's default keep-alive of
    2 s: a client must give up an idle connection before the server closes it,
    otherwise a POST can be written onto a connection the server is closing and
    fail in a way that cannot safely be retried. ``trust_env`` is off so an
    ``HTTP_PROXY`` variable in a container never reroutes internal traffic.

Timeouts and the deadline
    Each attempt has a connect timeout and a read timeout. The whole call,
    retries and backoff sleeps included, has a deadline: no attempt starts after
    it, no backoff sleep is started that would end after it, and each attempt's
    timeouts are capped by the time left, so a call never takes much longer than
    ``deadline`` (httpx's read timeout applies per socket read, so a server that
    trickles bytes can overrun; internal JSON responses arrive in one or two reads).
    Running out of time raises :class:`DeadlineExceeded`.

What is retried, and why only that
    A retry is only safe when repeating the request cannot apply it twice.

    * Connect failures (``ConnectError``, ``ConnectTimeout``, ``PoolTimeout``) are
      retried for every method, POST included: the request never left this
      process, so the downstream cannot have acted on it.
    * GET, HEAD, PUT, DELETE and OPTIONS are idempotent by HTTP semantics, so they
      are also retried on 502/503/504 (a proxy or the server saying "not now") and
      on read/write timeouts and dropped connections after sending.
    * POST and PATCH are never retried once the request may have been sent: a
      timeout or a 503 after sending does not tell us whether the write happened,
      and a duplicated follow or post is worse than a failed request the caller
      can report. A caller that makes a POST idempotent (an idempotency key the
      server honours) can pass ``idempotent=True`` to :meth:`ServiceClient.request`.
    * Other responses are never retried: a 4xx will not change on retry, and a
      500 is a bug, not an overload.

    Retries back off exponentially with full jitter:
    ``sleep = random.uniform(0, min(backoff_cap, backoff_base * 2 ** attempt))``
    (attempt 0 before the first retry). Jitter spreads the retries of many
    replicas so a recovering downstream is not hit by synchronised waves; the cap
    and ``max_retries`` (2 by default, so at most 3 attempts) bound the extra load
    that retries put on a struggling service.

Circuit breaker
    Each client has a :class:`CircuitBreaker` (or shares one passed in). Every
    attempt that fails with a connect error, a timeout or a 5xx counts as a
    failure; any other response resets the count. After ``failure_threshold``
    consecutive failures it opens, and calls fail at once with
    :class:`CircuitOpenError` without touching the network, so a dead downstream
    costs callers nothing and gets room to recover. After ``reset_timeout`` it is
    half-open: exactly one trial request goes through; success closes it, failure
    opens it again.

Errors
    :class:`DownstreamError` is the base. :class:`DownstreamUnavailable`
    (connect failure, timeout, 5xx, with subclasses :class:`DeadlineExceeded` and
    :class:`CircuitOpenError`) is what callers catch to degrade, e.g. render a
    timeline without fresh profiles. :class:`DownstreamHTTPError` carries a 4xx
    status and body: the request itself was wrong or the resource is missing.

Request id and credential
    The current request id (``shared.requestid.get_request_id()``) is sent as
    ``X-Request-ID`` so one id follows a request through every service's logs.
    If a ``credential`` callable is given it is called for every attempt and sent
    as ``Authorization: Bearer <token>``: ``/internal/...`` endpoints require it.

Metrics
    With prometheus-client installed (and ``metrics=True``), each call adds one to
    ``downstream_requests_total{service,target,outcome}`` with outcome ``success``,
    ``client_error``, ``unavailable``, ``deadline``, ``circuit_open`` or ``error``;
    each retry adds one with outcome ``retry``. ``downstream_request_seconds{target}``
    observes each call's total duration, retries included.
"""

from __future__ import annotations

import itertools
import json as _json
import logging
import random as _random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, Self

import httpx

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "DeadlineExceeded",
    "DownstreamError",
    "DownstreamHTTPError",
    "DownstreamUnavailable",
    "ServiceClient",
]

logger = logging.getLogger(__name__)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRYABLE_STATUSES = frozenset({502, 503, 504})

# Failures that happen before any byte of the request is written: safe to retry
# for every method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Failures after the request may have been sent: retried for idempotent methods only.
_MAYBE_SENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

try:
    from prometheus_client import Counter, Histogram
except ImportError:  # pragma: no cover - prometheus-client is a shared dependency
    _REQUESTS = None
    _DURATION = None
else:
    _REQUESTS = Counter(
        "downstream_requests_total",
        "Calls to downstream services by outcome; outcome=retry counts retries.",
        ["service", "target", "outcome"],
    )
    _DURATION = Histogram(
        "downstream_request_seconds",
        "Duration of calls to downstream services, retries and backoff included.",
        ["target"],
    )


# --------------------------------------------------------------------------- errors


class DownstreamError(Exception):
    """A call to another service failed. ``service`` names the downstream."""

    def __init__(self, service: str, detail: str) -> None:
        super().__init__(service, detail)
        self.service = service
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.service}: {self.detail}"


class DownstreamUnavailable(DownstreamError):
    """The downstream could not give an answer: catch this to degrade.

    ``status`` is the last 5xx status when the failure was a response, else None.
    """

    def __init__(self, service: str, detail: str, status: int | None = None) -> None:
        super().__init__(service, detail)
        self.status = status

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.service, self.detail, self.status))


class CircuitOpenError(DownstreamUnavailable):
    """The circuit breaker is open: the call failed without touching the network."""


class DeadlineExceeded(DownstreamUnavailable):
    """The call's overall deadline ran out before an answer arrived."""


class DownstreamHTTPError(DownstreamError):
    """The downstream answered with a 4xx. ``body`` is decoded JSON, else text."""

    def __init__(self, service: str, status: int, body: Any, detail: str | None = None) -> None:
        super().__init__(service, detail if detail is not None else f"HTTP {status}")
        self.status = status
        self.body = body

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.service, self.status, self.body, self.detail))


# -------------------------------------------------------------------- circuit breaker


class CircuitBreaker:
    """Consecutive-failure circuit breaker; thread-safe.

    closed: requests flow; ``failure_threshold`` consecutive failures open it.
    open: :meth:`allow_request` is False until ``reset_timeout`` has passed.
    half_open: one trial request is allowed; its success closes the breaker,
    its failure opens it again. Concurrent callers are refused meanwhile.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        name: str = "",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        with self._lock:
            self._maybe_half_open()
            return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        with self._lock:
            return self._failures

    def allow_request(self) -> bool:
        """Ask to send one request. True means go ahead and report the result
        with :meth:`record_success`, :meth:`record_failure` or :meth:`release`."""
        with self._lock:
            self._maybe_half_open()
            if self._state == self.CLOSED:
                return True
            if self._state == self.HALF_OPEN and not self._trial_in_flight:
                self._trial_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            if self._state == self.HALF_OPEN:
                logger.warning("circuit breaker %s closed: trial request succeeded", self.name)
            # A success reported while open comes from a request sent before the
            # breaker opened; it says nothing about the downstream now.
            if self._state != self.OPEN:
                self._state = self.CLOSED
                self._failures = 0
                self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            if self._state == self.HALF_OPEN:
                self._open("trial request failed")
            elif self._state == self.CLOSED:
                self._failures += 1
                if self._failures >= self.failure_threshold:
                    self._open(f"{self._failures} consecutive failures")

    def release(self) -> None:
        """Give back a permission that ended in neither success nor failure."""
        with self._lock:
            self._trial_in_flight = False

    def _open(self, reason: str) -> None:
        logger.warning(
            "circuit breaker %s opened for %ss: %s",
            self.name,
            self.reset_timeout,
            reason,
        )
        self._state = self.OPEN
        self._opened_at = self._clock()
        self._failures = 0
        self._trial_in_flight = False

    def _maybe_half_open(self) -> None:
        if self._state == self.OPEN and self._clock() - self._opened_at >= self.reset_timeout:
            self._state = self.HALF_OPEN
            self._trial_in_flight = False


# ----------------------------------------------------------------------------- client


class _Uniform(Protocol):
    def uniform(self, a: float, b: float) -> float: ...


def _current_request_id() -> str | None:
    # Imported per call: shared.requestid belongs to another module of this
    # package and may be absent; a per-call import also lets tests swap it.
    try:
        from shared.requestid import get_request_id
    except ImportError:

        def get_request_id() -> str | None:
            return None

    return get_request_id()


class ServiceClient:
    """Resilient JSON-over-HTTP client for one downstream service.

    ``service_name`` is the calling service (sent as the User-Agent, used in
    metrics), ``target`` the downstream (used in errors, logs and metrics).
    ``base_url`` may list several replicas, comma-separated (``make run``'s two
    users replicas; compose and Kubernetes give one load-balanced name):
    requests take them in turn, and a retry goes to the next one, so a replica
    that refuses connections (restarting) costs a retry, not a failure.
    ``sleep``, ``random`` and ``clock`` exist so tests can control backoff and time.
    """

    def __init__(
        self,
        base_url: str,
        *,
        service_name: str,
        target: str,
        connect_timeout: float = 0.5,
        read_timeout: float = 2.0,
        deadline: float = 3.0,
        max_retries: int = 2,
        backoff_base: float = 0.05,
        backoff_cap: float = 1.0,
        breaker: CircuitBreaker | None = None,
        credential: Callable[[], str] | None = None,
        transport: httpx.BaseTransport | None = None,
        max_connections: int = 32,
        max_keepalive_connections: int = 16,
        keepalive_expiry: float = 1.5,
        metrics: bool = True,
        sleep: Callable[[float], None] = time.sleep,
        random: _Uniform = _random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.service_name = service_name
        self.target = target
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.breaker = breaker if breaker is not None else CircuitBreaker(name=target)
        self._credential = credential
        self._metrics = metrics and _REQUESTS is not None
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self._bases = [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]
        if not self._bases:
            raise ValueError("base_url names no URL")
        # processes start at different replicas, so they do not all call the first one first
        self._turn = itertools.count(_random.randrange(len(self._bases)))
        self._client = httpx.Client(
            timeout=httpx.Timeout(
                connect=connect_timeout,
                read=read_timeout,
                write=read_timeout,
                pool=connect_timeout,
            ),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive_connections,
                keepalive_expiry=keepalive_expiry,
            ),
            headers={"User-Agent": f"{service_name} (shared.http)"},
            transport=transport,
            trust_env=False,
            follow_redirects=False,
        )

    # -- public API -----------------------------------------------------------------

    def get_json(self, path: str, params: Any = None, **kw: Any) -> Any:
        """GET ``path`` and return the decoded JSON body (None for an empty body)."""
        response = self.request("GET", path, params=params, **kw)
        return self._decode_json(response)

    def post_json(self, path: str, json: Any, **kw: Any) -> Any:
        """POST ``json`` to ``path`` and return the decoded JSON body (None if empty)."""
        response = self.request("POST", path, json=json, **kw)
        return self._decode_json(response)

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool | None = None,
        deadline: float | None = None,
        **kw: Any,
    ) -> httpx.Response:
        """Send a request with retries, deadline and breaker; return a <400 response.

        ``kw`` goes to ``httpx.Client.build_request`` (params, json, content,
        headers, ...). ``idempotent`` overrides the method's retry safety;
        ``deadline`` overrides the client's deadline for this call.
        Raises DownstreamHTTPError (4xx) or DownstreamUnavailable (and subclasses).
        """
        started = time.perf_counter()
        outcome = "error"
        try:
            response = self._send(method.upper(), path, idempotent, deadline, kw)
            outcome = "success"
            return response
        except CircuitOpenError:
            outcome = "circuit_open"
            raise
        except DeadlineExceeded:
            outcome = "deadline"
            raise
        except DownstreamUnavailable:
            outcome = "unavailable"
            raise
        except DownstreamHTTPError:
            outcome = "client_error"
            raise
        finally:
            if self._metrics:
                _REQUESTS.labels(self.service_name, self.target, outcome).inc()  # type: ignore[union-attr]
                _DURATION.labels(self.target).observe(time.perf_counter() - started)  # type: ignore[union-attr]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        idempotent: bool | None,
        deadline: float | None,
        kw: dict[str, Any],
    ) -> httpx.Response:
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        budget = self.deadline if deadline is None else deadline
        deadline_at = self._clock() + budget
        extra_headers = kw.pop("headers", None)
        request_id = _current_request_id()
        first = next(self._turn)  # this request's replica; each retry moves to the next one
        attempt = 0
        last_error: DownstreamUnavailable | None = None

        while True:
            remaining = deadline_at - self._clock()
            if remaining <= 0:
                raise self._deadline_error(budget, attempt, last_error) from last_error
            headers = httpx.Headers(extra_headers)
            if request_id:
                headers["X-Request-ID"] = request_id
            if self._credential is not None:
                headers["Authorization"] = f"Bearer {self._credential()}"
            if not self.breaker.allow_request():
                raise CircuitOpenError(self.target, "circuit open; not calling") from last_error

            connect_t = min(self.connect_timeout, remaining)
            read_t = min(self.read_timeout, remaining)
            timeout = httpx.Timeout(connect=connect_t, read=read_t, write=read_t, pool=connect_t)
            status: int | None
            cause: BaseException | None
            try:
                base = self._bases[(first + attempt) % len(self._bases)]
                response = self._client.send(
                    self._client.build_request(method, base + path, headers=headers, timeout=timeout, **kw)
                )
            except httpx.TransportError as exc:
                if not isinstance(exc, _NOT_SENT + _MAYBE_SENT):
                    # Misconfiguration (bad scheme, proxy) or a bug on our side:
                    # not the downstream's fault and not worth retrying.
                    self.breaker.release()
                    raise DownstreamError(self.target, f"{type(exc).__name__}: {exc}") from exc
                self.breaker.record_failure()
                detail = f"{method} {path}: {type(exc).__name__}: {exc}"
                if isinstance(exc, httpx.TimeoutException) and (
                    connect_t < self.connect_timeout
                    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
                    else read_t < self.read_timeout
                ):
                    # This attempt's timeout was cut short by the deadline.
                    raise DeadlineExceeded(self.target, f"deadline of {budget}s exceeded; {detail}") from exc
                retryable = isinstance(exc, _NOT_SENT) or safe
                status = None
                cause = exc
            except BaseException:
                self.breaker.release()
                raise
            else:
                status = response.status_code
                if status < 500:
                    self.breaker.record_success()
                    if status >= 400:
                        raise DownstreamHTTPError(
                            self.target,
                            status,
                            _body(response),
                            f"{method} {path}: HTTP {status}",
                        )
                    return response
                self.breaker.record_failure()
                detail = f"{method} {path}: HTTP {status}"
                retryable = safe and status in RETRYABLE_STATUSES
                cause = None

            last_error = DownstreamUnavailable(self.target, detail, status)
            if not retryable:
                raise last_error from cause
            if attempt >= self.max_retries:
                raise DownstreamUnavailable(self.target, f"{detail} (after {attempt + 1} attempts)", status) from cause
            if len(self._bases) > 1 and isinstance(cause, _NOT_SENT):
                delay = 0.0  # that replica is not listening; the next one may be: no reason to wait
            else:
                delay = self._random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
            if self._clock() + delay >= deadline_at:
                raise self._deadline_error(budget, attempt + 1, last_error) from cause
            logger.info(
                "retrying %s %s on %s in %.3fs (attempt %d): %s",
                method,
                path,
                self.target,
                delay,
                attempt + 1,
                detail,
            )
            if self._metrics:
                _REQUESTS.labels(self.service_name, self.target, "retry").inc()  # type: ignore[union-attr]
            self._sleep(delay)
            attempt += 1

    def _deadline_error(self, budget: float, attempts: int, last_error: DownstreamUnavailable | None) -> DeadlineExceeded:
        detail = f"deadline of {budget}s exceeded after {attempts} attempt(s)"
        if last_error is not None:
            detail = f"{detail}; last error: {last_error.detail}"
        return DeadlineExceeded(self.target, detail, last_error.status if last_error is not None else None)

    def _decode_json(self, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise DownstreamError(self.target, f"invalid JSON in response to {response.request.url.path}") from exc


def _body(response: httpx.Response) -> Any:
    try:
        return _json.loads(response.content) if response.content else None
    except ValueError:
        return response.text
