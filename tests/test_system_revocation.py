"""Revoked access tokens end to end (docs/gateway.md#revoked-tokens): a real logout and a real
account deletion in the users service, and the gateway itself (its `gateway_revoked_tokens_total`
counts the refusal) and every service (called directly, past the gateway) refuse the tokens
concerned, while another session of the same account keeps working until the account is gone."""

from __future__ import annotations

import re

import httpx
from harness import PASSWORD, register, wait_until


def revoked_at_the_edge(system) -> float:
    text = httpx.get(f"http://127.0.0.1:{system.ctx.gateway_admin_port}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r"^gateway_revoked_tokens_total(?:\{[^}]*\})? (\S+)$", text, re.M))


def refused(response: httpx.Response) -> bool:
    return response.status_code == 401 and response.json().get("detail") == "token revoked"


def test_revoked_tokens_are_refused_by_the_gateway_and_every_service(system, api):
    name, _ = register(api, "revoked")
    session = api.post("/auth/login", json={"username": name, "password": PASSWORD})
    assert session.status_code == 200, session.text
    laptop = {"Authorization": f"Bearer {session.json()['access']}"}
    phone_login = api.post("/auth/login", json={"username": name, "password": PASSWORD}).json()
    phone = {"Authorization": f"Bearer {phone_login['access']}"}
    for headers in (phone, laptop):
        assert api.get("/feed", headers=headers).status_code == 200
    direct = {service: system.service_url(service) + "/api/v1" for service in ("users", "feed", "notifications")}

    # logout revokes that session: the gateway refuses it itself once its 1 s "not revoked" answer has lapsed
    before = revoked_at_the_edge(system)
    logout = api.post("/auth/logout", headers=phone, json={"refresh": phone_login["refresh"]})
    assert logout.status_code == 204, logout.text
    wait_until(
        lambda: refused(api.get("/feed", headers=phone)) and revoked_at_the_edge(system) > before,
        timeout=30,
        what="the gateway refusing the logged-out session",
    )
    for response in (
        api.get("/users/me", headers=phone),
        api.post("/posts", headers=phone, json={"body": "after logout"}),
        api.get("/notifications", headers=phone),
        httpx.get(f"{direct['users']}/users/me", headers=phone, timeout=10),
        httpx.post(f"{direct['feed']}/posts", headers=phone, json={"body": "after logout"}, timeout=10),
        httpx.get(f"{direct['notifications']}/notifications", headers=phone, timeout=10),
    ):
        assert refused(response), (response.request.url, response.status_code, response.text)
    assert api.get("/feed", headers=laptop).status_code == 200  # the other session is not touched

    # deleting the account revokes every token it has
    before = revoked_at_the_edge(system)
    deleted = api.request("DELETE", "/users/me", headers=laptop, json={"password": PASSWORD})
    assert deleted.status_code == 204, deleted.text
    wait_until(
        lambda: refused(api.get("/feed", headers=laptop)) and revoked_at_the_edge(system) > before,
        timeout=30,
        what="the gateway refusing the deleted account's token",
    )
    for response in (
        api.post("/posts", headers=laptop, json={"body": "from beyond"}),
        api.post(f"/users/{name}/follow", headers=laptop),
        api.post("/devices", headers=laptop, json={"platform": "ios", "token": "gone-phone"}),
        httpx.post(f"{direct['feed']}/posts", headers=laptop, json={"body": "from beyond"}, timeout=10),
        httpx.post(f"{direct['notifications']}/devices", headers=laptop, json={"platform": "ios", "token": "x"}, timeout=10),
        httpx.get(f"{direct['users']}/users/me", headers=laptop, timeout=10),
    ):
        assert refused(response), (response.request.url, response.status_code, response.text)
