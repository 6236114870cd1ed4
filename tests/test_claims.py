"""Verifiable credentials (VC-JWT, EdDSA, did:key issuers), built here with PyJWT."""
from __future__ import annotations

import json
import subprocess
import sys

import jwt
import pytest

from device.claims import ClaimError, check_vc_jwt, import_claim, trust_issuer
from device.portability import full_dump
from device.store import Store
from vrm_protocol import Identity

NOW = 1_800_000_000


def vc_jwt(issuer: Identity, *, signer: Identity | None = None, nbf=NOW - 3600, exp=NOW + 86400,
           alg="EdDSA", subject=None, v2=False) -> str:
    subject = subject or {"id": "did:example:me", "drivingLicence": {"valid": True, "category": "B"}}
    if v2:
        payload = {"@context": ["https://www.w3.org/ns/credentials/v2"], "type": ["VerifiableCredential",
                   "DrivingLicenceCredential"], "issuer": issuer.did, "validFrom": "2026-01-01T00:00:00Z",
                   "validUntil": "2028-01-01T00:00:00Z", "credentialSubject": subject}
    else:
        payload = {"iss": issuer.did, "sub": "did:example:me", "nbf": nbf, "exp": exp,
                   "vc": {"@context": ["https://www.w3.org/2018/credentials/v1"],
                          "type": ["VerifiableCredential", "DrivingLicenceCredential"],
                          "credentialSubject": subject}}
    key = (signer or issuer).private_key
    if alg != "EdDSA":
        return jwt.encode(payload, "secret-secret-secret-secret-1234", algorithm=alg)
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": issuer.kid})


@pytest.fixture
def issuer():
    return Identity.generate()


@pytest.fixture
def store(tmp_path, issuer):
    s = Store.open(tmp_path / "box", clock=lambda: NOW)
    trust_issuer(s, issuer.did)
    yield s
    s.close()


def test_valid_credential_is_stored_and_backs_a_profile_field(store, issuer):
    rec = import_claim(store, vc_jwt(issuer))
    assert rec.issuer == issuer.did and "DrivingLicenceCredential" in rec.types
    assert store.list_claims()[0].subject["drivingLicence"]["category"] == "B"
    store.set_profile_field("driving_licence", True, provenance="claim", source=rec.id)
    assert store.get_profile()["driving_licence"].source == rec.id
    assert store.audit.entries()[-2].event_type == "claim_imported"


def test_vc2_shape_with_iso_dates(store, issuer):
    rec = import_claim(store, vc_jwt(issuer, v2=True))
    assert rec.valid_until == 1830297600


@pytest.mark.parametrize("case, match", [
    ("bad_signature", "signature"),
    ("expired", "expired"),
    ("not_yet", "not valid yet"),
    ("untrusted", "not in your trusted issuers"),
    ("hs256", "alg must be EdDSA"),
    ("garbage", "compact JWT"),
    ("duplicate", "already imported"),
])
def test_bad_credentials_are_refused_and_change_nothing(store, issuer, case, match):
    other = Identity.generate()
    if case == "duplicate":
        import_claim(store, vc_jwt(issuer))
    token = {
        "bad_signature": lambda: vc_jwt(issuer, signer=other),
        "expired": lambda: vc_jwt(issuer, exp=NOW - 3600, nbf=NOW - 7200),
        "not_yet": lambda: vc_jwt(issuer, nbf=NOW + 3600),
        "untrusted": lambda: vc_jwt(other),
        "hs256": lambda: vc_jwt(issuer, alg="HS256"),
        "garbage": lambda: "not.a-jwt",
        "duplicate": lambda: vc_jwt(issuer),
    }[case]()
    before = full_dump(store)
    with pytest.raises(ClaimError, match=match):
        import_claim(store, token)
    assert full_dump(store) == before


def test_tampered_payload_fails_signature(issuer):
    token = vc_jwt(issuer)
    h, p, s = token.split(".")
    import base64
    payload = json.loads(base64.urlsafe_b64decode(p + "=="))
    payload["vc"]["credentialSubject"]["drivingLicence"]["category"] = "C"
    p2 = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    with pytest.raises(ClaimError, match="signature"):
        check_vc_jwt(f"{h}.{p2}.{s}", now=NOW, trusted_issuers=[issuer.did])


@pytest.mark.slow
def test_cli_claims_trust_import_list(tmp_path, issuer):
    d = tmp_path / "box"
    f = tmp_path / "vc.jwt"
    import time
    f.write_text(vc_jwt(issuer, nbf=int(time.time()) - 60, exp=int(time.time()) + 3600))

    def run(*a):
        return subprocess.run([sys.executable, "-m", "vrmbox", "claims", *a, "--data-dir", str(d),
                               "--json"], capture_output=True, text=True, timeout=60)

    r = run("import", str(f))
    assert r.returncode == 1 and "trusted" in json.loads(r.stdout)["error"]
    assert run("trust", issuer.did).returncode == 0
    r = run("import", str(f))
    assert r.returncode == 0, r.stdout
    listed = json.loads(run("list").stdout)
    assert listed[0]["issuer"] == issuer.did and "jwt" not in listed[0]


def test_claim_dates_that_are_not_dates_or_hide_an_expiry_are_refused(tmp_path):
    """A null `exp` must not hide the credential's own expirationDate; NaN is not a date."""
    import math as _m
    from device.claims import ClaimError, _time
    with pytest.raises(ClaimError):
        _time(_m.nan, "exp")
    with pytest.raises(ClaimError):
        _time(1e400, "exp")


def test_a_null_exp_does_not_hide_an_expired_credential(store, issuer):
    payload = {"iss": issuer.did, "sub": "did:example:me", "nbf": NOW - 100, "exp": None,
               "vc": {"@context": ["https://www.w3.org/2018/credentials/v1"],
                      "type": ["VerifiableCredential"], "expirationDate": "2020-01-01T00:00:00Z",
                      "credentialSubject": {"id": "did:example:me"}}}
    token = jwt.encode(payload, issuer.private_key, algorithm="EdDSA", headers={"kid": issuer.kid})
    with pytest.raises(ClaimError, match="expired"):
        import_claim(store, token)
    assert store.list_claims() == []
