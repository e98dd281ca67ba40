"""The client's IP address as the services see it: resolved once, by the gateway.

The gateway walks `X-Forwarded-For` from the right through its trusted proxies
(GATEWAY_TRUSTED_PROXIES) and sends the one address it found in `X-Client-IP`, a header it
strips from every client request (docs/gateway.md, "True client IP"). A service believes that
header only when the request's TCP peer is a gateway (TRUSTED_GATEWAY_PEERS, CIDRs; default the
loopback addresses, where `make run` and the tests run the gateway); from any other peer the
peer address is the client. `X-Forwarded-For` is never read: behind a load balancer its
right-most entry is the balancer, and every client would share one per-IP bucket.
"""

from __future__ import annotations

import functools
import ipaddress

from django.conf import settings

HEADER = "HTTP_X_CLIENT_IP"
DEFAULT_GATEWAY_PEERS = "127.0.0.1/32,::1/128"


@functools.lru_cache(maxsize=8)
def _networks(spec: str) -> tuple:
    nets = []
    for cidr in spec.replace(";", ",").split(","):
        if cidr.strip():
            nets.append(ipaddress.ip_network(cidr.strip(), strict=False))
    return tuple(nets)


@functools.lru_cache(maxsize=4096)
def _is_gateway(addr: str, spec: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in _networks(spec))


def _valid(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


def client_ip(request) -> str:
    """`request` is a Django HttpRequest or a DRF Request (its META is the WSGI environ)."""
    meta = request.META
    peer = meta.get("REMOTE_ADDR", "") or ""
    spec = getattr(settings, "TRUSTED_GATEWAY_PEERS", DEFAULT_GATEWAY_PEERS)
    forwarded = meta.get(HEADER)
    if forwarded and _is_gateway(peer, spec):
        forwarded = forwarded.strip()
        if _valid(forwarded):
            return forwarded
    return peer
