"""The JSON API under /api/v1: the same daemon operations as the pages, the same session and
CSRF rules (the token goes in the `X-CSRFToken` header; GET /api/v1/session hands it out).

Why one table: each endpoint is declared once in ENDPOINTS (method, path, daemon op, how its
args are built, request and response schemas); the Flask routes and the OpenAPI document
(companion_app/openapi.py) are both generated from it, so no route can be undocumented.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import jsonschema
from flask import Blueprint, current_app, g, jsonify, request
from flask_wtf.csrf import generate_csrf

from device.market import COMPANION_ONLY_SETTING
from device.records import VENDOR_STATUSES

from . import schemas as S
from .auth import attempt_pairing
from .box import BoxDown, BoxRefused
from .inputs import control_message, json_control
from .pages import box, held_message, reads
from .readcache import CACHED_OPS
from .security import current_phone

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api/v1")

Args = Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Endpoint:
    """One API operation. `args(path_params, query, body)` builds the daemon op's arguments."""

    method: str
    path: str                      # OpenAPI style: /offers/{offer}/accept
    op: str
    summary: str
    args: Args = lambda p, q, b: {}
    body: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=lambda: {})
    query: tuple[tuple[str, dict[str, Any]], ...] = ()
    tag: str = "box"
    paged: bool = False            # list answers sliced by ?offset=&limit= (PAGE_DEFAULT, PAGE_MAX)

    @property
    def endpoint(self) -> str:
        return f"{self.op}_{self.method.lower()}"


def _only(*names: str) -> Args:
    return lambda p, q, b: {**{k: v for k, v in b.items() if k in names}, **p}


def _offers_args(p: dict[str, Any], q: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"all": q.get("all") == "true"}
    if q.get("intent"):
        out["intent"] = q["intent"]
    return out


def _audit_args(p: dict[str, Any], q: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"limit": int(q.get("limit") or 50), "offset": int(q.get("offset") or 0)}
    if q.get("type"):
        out["type"] = q["type"]
    return out


ID = S.ID
PAGE_DEFAULT = 100
PAGE_MAX = 1000
PAGING = (("offset", {"type": "string", "pattern": "^[0-9]{1,7}$"}),
          ("limit", {"type": "string", "pattern": "^(?:[1-9][0-9]{0,2}|1000)$"}))
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/status", "status", "The daemon's state (connected, box id ...)", result=S.OBJECT),
    Endpoint("GET", "/intents", "intents", "All intents, newest first", result=S.array(S.INTENT)),
    Endpoint("POST", "/intents", "intent_add", "Cast a new intent",
             _only("category", "attributes", "description", "ttl"), S.INTENT_NEW, S.OBJECT),
    Endpoint("POST", "/intents/preset", "intent_preset", "Cast an intent from a preset",
             _only("name"), S.obj({"name": S.text(100)}, ["name"]), S.OBJECT),
    Endpoint("POST", "/intents/{intent}/withdraw", "intent_withdraw", "Withdraw an open intent",
             _only(), None, S.OBJECT),
    Endpoint("GET", "/offers", "offers", "Offers ranked by the person's rules, with explanations",
             _offers_args, None, S.array(S.OFFER),
             query=(("intent", ID), ("all", {"type": "string", "enum": ["true", "false"]}), *PAGING),
             paged=True),
    Endpoint("POST", "/offers/{offer}/accept", "offer_accept",
             "Accept: sign an agreement that waits for the button on the box",
             _only("fields", "purpose", "duration_days"), S.ACCEPT, S.OBJECT),
    Endpoint("POST", "/offers/{offer}/decline", "offer_decline", "Decline an offer", _only(), None, S.OBJECT),
    Endpoint("POST", "/offers/{offer}/snooze", "offer_snooze", "Snooze an offer",
             _only("seconds"), S.obj({"seconds": {"type": "integer", "minimum": 1, "maximum": 7776000}}),
             S.OBJECT),
    Endpoint("GET", "/agreements", "agreements", "Agreements and their states", result=S.array(S.AGREEMENT)),
    Endpoint("POST", "/agreements/{agreement}/confirm", "confirm",
             "Confirm from the phone (only with companion-only confirmation on)", _only(), None, S.OBJECT),
    Endpoint("POST", "/agreements/{agreement}/cancel", "cancel", "Cancel one not yet confirmed",
             _only(), None, S.OBJECT),
    Endpoint("POST", "/agreements/{agreement}/revoke", "revoke", "Revoke: the vendor must delete",
             _only("reason"), S.obj({"reason": S.text(200)}), S.OBJECT),
    Endpoint("GET", "/vendors", "vendors", "Vendors seen, with key-change warnings", result=S.array(S.VENDOR)),
    Endpoint("PUT", "/vendors/{vendor}/status", "vendor_status", "Allow, block or trust a vendor",
             _only("status"), S.obj({"status": {"type": "string", "enum": list(VENDOR_STATUSES)}}, ["status"]),
             S.OBJECT),
    Endpoint("POST", "/vendors/{vendor}/accept-key", "vendor_accept_key",
             "Accept a vendor's changed key (held until the box's button is pressed)",
             _only("did"), S.obj({"did": {"type": "string", "pattern": "^did:key:[1-9A-HJ-NP-Za-km-z]{1,100}$"}},
                                 ["did"]), S.OBJECT),
    Endpoint("GET", "/rules", "rules", "The person's ranking rules", result=S.OBJECT),
    Endpoint("PUT", "/rules", "rules_set", "Replace the rules (validated by the box)",
             _only("rules"), S.obj({"rules": S.OBJECT}, ["rules"]), S.OBJECT),
    Endpoint("GET", "/profile", "profile", "Profile fields with provenance", result=S.ANY_JSON),
    Endpoint("PUT", "/profile/{name}", "profile_set", "Set a profile field",
             _only("value"), S.obj({"value": S.text(2000, 1)}, ["value"]), S.OBJECT),
    Endpoint("DELETE", "/profile/{name}", "profile_delete", "Delete a profile field", _only(), None, S.OBJECT),
    Endpoint("GET", "/phones", "phones", "Paired phones", result=S.array(S.PHONE)),
    Endpoint("DELETE", "/phones/{phone}", "phone_unpair", "Unpair a phone (this one or another)",
             _only(), None, S.OBJECT),
    Endpoint("PUT", "/settings/companion-only-confirmation", "setting_set",
             "Turn companion-only confirmation on (held for the box's button) or off",
             lambda p, q, b: {"key": COMPANION_ONLY_SETTING, "value": b.get("value")},
             S.obj({"value": {"type": "boolean"}}, ["value"]), S.OBJECT),
    Endpoint("GET", "/audit", "audit", "The audit log, paged", _audit_args, None, S.ANY_JSON,
             query=(("limit", {"type": "string", "pattern": "^[0-9]{1,3}$"}),
                    ("offset", {"type": "string", "pattern": "^[0-9]{1,7}$"}),
                    ("type", {"type": "string", "pattern": "^[a-z0-9_]{1,64}$"}))),
)
PATH_PARAMS = {"intent": ID, "offer": ID, "agreement": ID, "vendor": S.SLUG, "name": S.FIELD, "phone": S.PHONE_ID}


def error(status: int, message: str, code: str, **extra: Any) -> Any:
    resp = jsonify({"error": message, "code": code, **extra})
    resp.status_code = status
    return resp


def _check(schema: dict[str, Any] | None, value: Any, where: str) -> str | None:
    if schema is None:
        return None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or where
        return f"{path}: {exc.message[:200]}"
    return None


def _controls(body: Any) -> Any:
    """A 400 naming the field when any string of a JSON body holds a control character."""
    if (hit := json_control(body)) is not None:
        where, ch = hit
        return error(400, f"{where}: {control_message(ch)}", "bad_request", field=where)
    return None


def _view(ep: Endpoint) -> Callable[..., Any]:
    def view(**params: str) -> Any:
        for name, value in params.items():
            if (msg := _check(PATH_PARAMS.get(name), value, name)) is not None:
                return error(400, msg, "bad_request", field=name)
        query = {k: v for k, v in request.args.items()}
        for name, schema in ep.query:
            if name in query and (msg := _check(schema, query[name], name)) is not None:
                return error(400, msg, "bad_request", field=name)
        body: dict[str, Any] = {}
        if ep.body is not None:
            body = request.get_json(silent=True)
            if body is None and request.content_length in (None, 0):
                body = {}
            if not isinstance(body, dict):
                return error(400, "the request body must be a JSON object", "bad_request")
            if (refused := _controls(body)) is not None:
                return refused
            if (msg := _check(ep.body, body, "body")) is not None:
                return error(400, msg, "bad_request")
        phone = g.get("phone")
        if ep.method == "GET" and phone and ep.op in CACHED_OPS:
            # the serialised answer, reused like the read it is made of (readcache.py)
            try:
                text = reads().page(f"api:{phone['phone']}:{request.full_path}",
                                    lambda: _render(ep, reads().call(ep.op, ep.args(params, query, body)), query))
            except BoxDown as exc:
                return error(503, str(exc), "box_down")
            except BoxRefused as exc:
                return error(400, str(exc), "refused")
            return current_app.response_class(text, mimetype="application/json")
        try:
            if ep.method == "GET":
                result = reads().call(ep.op, ep.args(params, query, body))
            else:
                try:
                    result = box().call(ep.op, ep.args(params, query, body))
                finally:
                    reads().invalidate()
        except BoxDown as exc:
            return error(503, str(exc), "box_down")
        except BoxRefused as exc:
            return error(400, str(exc), "refused")
        if ep.op == "phone_unpair":
            current_app.extensions["vrmbox_sessions"].forget()
        if ep.paged and isinstance(result, list):
            offset, limit = int(query.get("offset") or 0), int(query.get("limit") or PAGE_DEFAULT)
            return jsonify(result[offset:offset + limit])
        held = held_message(result)
        if held:
            return jsonify({**result, "message": held}), 202
        return jsonify(result)
    view.__name__ = ep.endpoint
    return view


def _render(ep: Endpoint, result: Any, query: dict[str, Any]) -> str:
    if ep.paged and isinstance(result, list):
        offset, limit = int(query.get("offset") or 0), int(query.get("limit") or PAGE_DEFAULT)
        result = result[offset:offset + limit]
    return json.dumps(result, ensure_ascii=False, default=str)


def _flask_path(path: str) -> str:
    return path.replace("{", "<").replace("}", ">")


for _ep in ENDPOINTS:
    bp.add_url_rule(_flask_path(_ep.path), endpoint=_ep.endpoint, view_func=_view(_ep), methods=[_ep.method])


@bp.route("/session", methods=["GET"])
def session() -> Any:
    """Whether this browser is paired, and the CSRF token for changing requests."""
    phone = current_phone(current_app)
    return jsonify({"paired": phone is not None, "phone": phone, "csrf_token": generate_csrf()})


@bp.route("/pair", methods=["POST"])
def pair() -> Any:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error(400, "the request body must be a JSON object", "bad_request")
    if (refused := _controls(body)) is not None:
        return refused
    if (msg := _check(S.PAIR, body, "body")) is not None:
        return error(400, msg, "bad_request")
    status, result, headers = attempt_pairing(body["code"], body.get("name", ""))
    resp = jsonify(result if status == 200 else {**result, "code": result.get("code", "refused")})
    resp.status_code = status
    for k, v in headers.items():
        resp.headers[k] = v
    return resp


@bp.route("/openapi.json", methods=["GET"])
def openapi() -> Any:
    from .openapi import document
    return jsonify(document())
