"""Push providers: how a message reaches a device. `webhook` POSTs to a relay (e.g. a service that
talks to APNs/FCM), signed with HMAC-SHA256; `log` writes the push to the log (development)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import httpx
from django.conf import settings

logger = logging.getLogger("devices.push")
SIGNATURE_HEADER = "X-Push-Signature"
TIMESTAMP_HEADER = "X-Push-Timestamp"


@dataclass(frozen=True)
class PushMessage:
    push_id: str  # stable across retries of the same push to the same device: receivers dedupe on it
    user_id: int
    platform: str
    token: str
    title: str
    body: str
    notification_ids: list[str]


class PushError(Exception):
    def __init__(self, detail: str, *, permanent: bool = False):
        super().__init__(detail)
        self.permanent = permanent


class PushProvider(Protocol):
    def send(self, message: PushMessage) -> None: ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookProvider:
    def __init__(self, url: str, secret: str, timeout: float):
        self.url, self.secret = url, secret
        self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)), trust_env=False)

    def send(self, message: PushMessage) -> None:
        body = json.dumps(message.__dict__, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            "Idempotency-Key": message.push_id,
        }
        try:
            response = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PushError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            # 408/429/5xx are worth retrying; any other 4xx will not get better
            permanent = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
            raise PushError(f"webhook answered {response.status_code}", permanent=permanent)


class LogProvider:
    def send(self, message: PushMessage) -> None:
        logger.info("push", extra={"push": message.__dict__})


@lru_cache(maxsize=1)
def provider() -> PushProvider:
    if settings.PUSH_PROVIDER == "webhook":
        return WebhookProvider(settings.PUSH_WEBHOOK_URL, settings.PUSH_WEBHOOK_SECRET, settings.PUSH_WEBHOOK_TIMEOUT)
    if settings.PUSH_PROVIDER == "log":
        return LogProvider()
    raise ValueError(f"unknown PUSH_PROVIDER {settings.PUSH_PROVIDER!r}")
