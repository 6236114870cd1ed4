"""Schemathesis against the companion API, served for real (cheroot on loopback) to a paired
session with its CSRF token, in front of a real daemon: no server error, and every answer matches
the OpenAPI document (status code, content type, body schema)."""
from __future__ import annotations

from collections import defaultdict

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from companion_app.serve import bound_port, make_server, serve_in_thread

from companion_app.openapi import document
from test_companion_helpers import make_app, new_code, running_box

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

STATUSES: defaultdict[str, set[int]] = defaultdict(set)    # operation -> status codes seen
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with running_box(tmp_path_factory.mktemp("companion-api")) as box:
        app = make_app(box["socket"])
        server = make_server(app, "127.0.0.1", 0, threads=4)
        serve_in_thread(server)
        base = f"http://127.0.0.1:{bound_port(server)}"
        session = requests.Session()
        token = session.get(base + "/api/v1/session", timeout=10).json()["csrf_token"]
        r = session.post(base + "/api/v1/pair", json={"code": new_code(box["data"]), "name": "fuzzer"},
                         headers={"X-CSRFToken": token}, timeout=10)
        assert r.status_code == 200, r.text
        token = session.get(base + "/api/v1/session", timeout=10).json()["csrf_token"]
        try:
            yield {"base": base, "session": session, "token": token, "box": box}
        finally:
            server.stop()


# The document is pure data (no app needed). The fuzzer must not unpair its own session or pair
# others: those two are tested by hand in test_companion.py.
schema = schemathesis.openapi.from_dict(document()).exclude(operation_id=["phone_unpair_delete", "pair"])


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, served):
    headers = {"X-CSRFToken": served["token"]}
    r = case.call_and_validate(base_url=served["base"] + "/api/v1", session=served["session"],
                               headers=headers, checks=CHECKS, timeout=30)
    STATUSES[case.operation.label].add(r.status_code)


def test_session_still_paired_after_fuzzing(served):
    """The fuzzing ran as a paired phone (not 401 all the way), and is still paired."""
    r = served["session"].get(served["base"] + "/api/v1/session", timeout=10)
    assert r.json()["paired"] is True
    assert STATUSES, "the fuzzing test did not run first"
    ok = {op for op, codes in STATUSES.items() if codes & {200, 202}}
    assert all(401 not in codes for codes in STATUSES.values()), STATUSES
    assert len(ok) >= 10, STATUSES
