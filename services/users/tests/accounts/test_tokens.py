import base64
import json
import time

import jwt
import pytest
from accounts import services
from accounts.keys import active_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rest_framework.test import APIClient

from shared.testing import assert_problem

pytestmark = pytest.mark.django_db


def claims_for(user, **overrides):
    now = int(time.time())
    return {
        "iss": "social-users",
        "aud": "social-api",
        "sub": str(user.id),
        "username": user.username,
        "iat": now,
        "exp": now + 60,
        "jti": "j1",
        **overrides,
    }


def sign(claims, *, key=None, kid=None, alg="EdDSA", typ="at+jwt"):
    key = key or active_key().private_key
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid or active_key().kid, "typ": typ})


def me(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/users/me")


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token(alice):
    assert me(sign(claims_for(alice))).json()["id"] == str(alice.id)


def test_jwks_publishes_public_key_only(api_client):
    body = api_client.get("/.well-known/jwks.json").json()
    assert len(body["keys"]) == 1
    key = body["keys"][0]
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["kid"]) == ("OKP", "Ed25519", "EdDSA", active_key().kid)


def test_issued_token_header_and_claims(alice):
    token = services.access_token_issue(user=alice)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": active_key().kid}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 900 and claims["sub"] == str(alice.id)


@pytest.mark.parametrize(
    "attack",
    [
        "garbage",
        "expired",
        "tampered",
        "alg_none",
        "hs256_with_public_key",
        "wrong_audience",
        "wrong_issuer",
        "unknown_kid",
        "wrong_typ",
        "foreign_key",
        "non_numeric_sub",
    ],
)
def test_token_attacks(alice, attack):
    good = claims_for(alice)
    if attack == "garbage":
        token = "abc.def.ghi"
    elif attack == "expired":
        token = sign({**good, "exp": int(time.time()) - 60})
    elif attack == "tampered":
        header, _payload, signature = sign(good).split(".")
        token = ".".join([header, b64({**good, "sub": "999999"}), signature])
    elif attack == "alg_none":
        token = f"{b64({'alg': 'none', 'typ': 'at+jwt', 'kid': active_key().kid})}.{b64(good)}."
    elif attack == "hs256_with_public_key":
        from cryptography.hazmat.primitives import serialization

        public = active_key().private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        header = b64({"alg": "HS256", "typ": "at+jwt", "kid": active_key().kid})
        import hashlib
        import hmac

        body = f"{header}.{b64(good)}"
        sig = base64.urlsafe_b64encode(hmac.new(public, body.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
        token = f"{body}.{sig}"
    elif attack == "wrong_audience":
        token = sign({**good, "aud": "someone-else"})
    elif attack == "wrong_issuer":
        token = sign({**good, "iss": "evil"})
    elif attack == "unknown_kid":
        token = sign(good, kid="nope")
    elif attack == "wrong_typ":
        token = sign(good, typ="JWT")
    elif attack == "foreign_key":
        token = sign(good, key=Ed25519PrivateKey.generate())
    else:
        token = sign({**good, "sub": "abc"})
    response = me(token)
    assert_problem(response, 401, "invalid-token")
    assert response["WWW-Authenticate"] == 'Bearer realm="api", error="invalid_token"'


def test_missing_token(api_client):
    response = api_client.get("/api/v1/users/me")
    assert_problem(response, 401, "not-authenticated")
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_spoofed_identity_headers_are_ignored(alice, bob):
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {services.access_token_issue(user=alice)}",
        HTTP_X_USER_ID=str(bob.id),
        HTTP_X_USERNAME="bob",
        HTTP_X_FORWARDED_USER="bob",
    )
    assert client.get("/api/v1/users/me").json()["username"] == "alice"
    anonymous = APIClient()
    anonymous.credentials(HTTP_X_USER_ID=str(bob.id))
    assert_problem(anonymous.get("/api/v1/users/me"), 401, "not-authenticated")
