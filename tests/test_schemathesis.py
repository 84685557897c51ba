"""Schemathesis against our own OpenAPI document, over a real ``kato serve`` on loopback.

Every operation of ``/schema/openapi.json`` gets generated requests, valid
(positive) and schema-violating (negative) ones, the request bodies carrying the
input limits of web/limits.py. The check is schemathesis' ``not_a_server_error``:
no request may be answered 5xx. A path's ``session_id`` is a freshly created
session, so requests reach the handlers instead of stopping at the session guard.
Bounded: a few examples per operation and generation mode, no shrinking budget to
speak of; the whole run takes well under a minute.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

_HTTP = requests.Session()


@pytest.fixture(scope="module")
def openapi(server):
    return schemathesis.openapi.from_url(f"{server.base_url}/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("openapi")


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_server_error(case, server):
    if "session_id" in (case.path_parameters or {}):
        created = _HTTP.post(f"{server.base_url}/sessions", json={"node_id": "schemathesis"})
        case.path_parameters["session_id"] = created.json()["session_id"]
    response = case.call_and_validate(base_url=server.base_url, session=_HTTP, checks=[not_a_server_error])
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text)
