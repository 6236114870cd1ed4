"""The OpenAPI 3.1 document of /api/v1, generated from api.ENDPOINTS (one place for each route)."""
from __future__ import annotations

import re
from typing import Any

from . import schemas as S
from .api import ENDPOINTS, PATH_PARAMS

CSRF_HEADER = "X-CSRFToken"
_PARAM = re.compile(r"\{([a-z_]+)\}")


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors() -> dict[str, Any]:
    return {"400": _json(S.ERROR, "refused: bad input, no CSRF token, or the box said no (nothing changed)"),
            "401": _json(S.ERROR, "this browser is not paired"),
            "403": _json(S.ERROR, "cross-origin request"),
            "404": _json(S.ERROR, "no such resource"),
            "405": _json(S.ERROR, "method not allowed"),
            "413": _json(S.ERROR, "request too large"),
            "503": _json(S.ERROR, "the box daemon is not running")}


def document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for ep in ENDPOINTS:
        params = [{"name": n, "in": "path", "required": True, "schema": PATH_PARAMS[n]}
                  for n in _PARAM.findall(ep.path)]
        params += [{"name": n, "in": "query", "required": False, "schema": s} for n, s in ep.query]
        changing = ep.method != "GET"
        if changing:
            params.append({"name": CSRF_HEADER, "in": "header", "required": True,
                           "schema": {"type": "string"},
                           "description": "the csrf_token from GET /api/v1/session"})
        op: dict[str, Any] = {"operationId": ep.endpoint, "summary": ep.summary, "tags": [ep.tag],
                              "parameters": params, "security": [{"session": []}],
                              "responses": {"200": _json(ep.result, "done"), **_errors()}}
        if changing:
            op["responses"]["202"] = _json(S.HELD, "held: waits for a long press on the box")
        if ep.body is not None:
            op["requestBody"] = {"required": ep.method != "POST" or bool(ep.body.get("required")),
                                 "content": {"application/json": {"schema": ep.body}}}
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    paths["/session"] = {"get": {"operationId": "session", "summary": "Paired? and the CSRF token",
                                 "security": [], "responses": {"200": _json(S.SESSION, "the session"),
                                                               **_errors()}}}
    paths["/pair"] = {"post": {
        "operationId": "pair", "summary": "Pair this browser with the code shown on the box",
        "security": [], "requestBody": {"required": True, "content": {"application/json": {"schema": S.PAIR}}},
        "parameters": [{"name": CSRF_HEADER, "in": "header", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json(S.obj({"phone": {"type": "string"}, "name": {"type": "string"}},
                                         ["phone", "name"]), "paired: the session cookie is set"),
                      "429": {**_json(S.ERROR, "too many wrong codes: wait"),
                              "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                          "description": "seconds"}}},
                      **_errors()}}}
    paths["/openapi.json"] = {"get": {"operationId": "openapi", "summary": "This document",
                                      "security": [], "responses": {"200": _json(S.OBJECT, "OpenAPI 3.1")}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "VRM box companion API", "version": "1.0.0",
                 "description": "The person's own box, from their paired phone. Every change needs "
                                f"the session cookie and the {CSRF_HEADER} header."},
        "servers": [{"url": "/api/v1"}],
        "components": {"securitySchemes": {"session": {"type": "apiKey", "in": "cookie", "name": "vrmbox"}}},
        "paths": paths,
    }
