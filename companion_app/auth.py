"""Pairing: the only page an unpaired browser may see, and the gate in front of all others.

No password anywhere: the person reads the one-time code off the box (or `vrmbox pair`) and
types it here. The box checks it (device/pairing.py: wrong codes limited per client and per
code); this app throttles each client on top and answers 429 with Retry-After while locked.
"""
from __future__ import annotations

import logging
from typing import Any

from flask import (Blueprint, Flask, Response, current_app, g, jsonify, redirect, render_template,
                   request, session, url_for)
from flask_wtf.csrf import CSRFError

from .box import DOWN_MESSAGE, BoxDown, BoxRefused
from .inputs import control_char, control_message, form_errors, summary
from .pages import box
from .security import SESSION_KEY, current_phone, same_origin, start_session, use_csrf

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

# Endpoints an unpaired client may reach: pairing itself, static files, the API's pairing
# pair and the API document (it describes the interface, it holds no personal data).
PUBLIC = frozenset({"static", "auth.pair", "api.session", "api.pair", "api.openapi"})
# Where a browser gets or uses a pairing token: its CSRF token comes from the pairing cookie
# there, never from (and never written into) a session.
PAIRING = frozenset({"auth.pair", "api.pair", "api.session"})
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_NAME = 64


def _is_api() -> bool:
    return request.path.startswith("/api/")


def _refuse(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Any:
    if _is_api():
        resp = jsonify({"error": message, "code": code})
    else:
        resp = Response(render_template("error.html", status=status, message=message), mimetype="text/html")
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def install_gate(app: Flask) -> None:
    csrf = app.extensions["csrf"]

    @app.before_request
    def gate() -> Any:
        ep = request.endpoint
        if ep is None:
            return None                        # 404/405 follow
        if ep not in PUBLIC:
            phone = current_phone(app)
            # Daemon down: a browser holding a session cookie sees pages with the banner and no
            # data; the cookie cannot be checked, so that request reaches neither the box nor
            # its cached answers (pages.box, pages.reads). Anyone else is sent to pairing.
            if phone is None and not (g.get("box_down") and SESSION_KEY in session):
                if _is_api():
                    return _refuse(401, "this phone is not paired with the box: pair it first",
                                   "not_paired")
                return redirect(url_for("auth.pair"))
        if ep in PAIRING:
            # the session's own token only where a paired browser asks for it (the API's
            # /session); the pairing forms always use the pairing cookie's
            use_csrf(app, paired=ep == "api.session" and current_phone(app) is not None)
        elif ep not in PUBLIC:
            use_csrf(app, paired=True)
        if request.method in CHANGING:
            origin = request.headers.get("Origin")
            if origin and origin != "null" and not same_origin(origin, request.scheme, request.host):
                return _refuse(403, "cross-origin request refused", "bad_origin")
            csrf.protect()
        return None

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError) -> Any:
        log.warning("CSRF refused %s %s: %s", request.method, request.path, exc.description)
        return _refuse(400, f"refused: {exc.description} (reload the page and try again)", "csrf")

    @app.errorhandler(413)
    def too_large(_exc: Any) -> Any:
        return _refuse(413, "that upload is too large", "too_large")

    @app.errorhandler(404)
    def not_found(_exc: Any) -> Any:
        return _refuse(404, "no such page", "not_found")

    @app.errorhandler(405)
    def bad_method(_exc: Any) -> Any:
        return _refuse(405, "that method is not allowed here", "method_not_allowed")

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {"phone": g.get("phone"), "box_down": g.get("box_down", False),
                "down_message": DOWN_MESSAGE}


def client_id() -> str:
    return request.remote_addr or "?"


def attempt_pairing(code: str, name: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(HTTP status, body, headers) for one pairing attempt; on success the session is set."""
    throttle = current_app.extensions["vrmbox_throttle"]
    client = client_id()
    wait = throttle.retry_after(client)
    if wait:
        return 429, {"error": f"too many wrong codes from this device: wait {wait} s",
                     "code": "locked", "retry_after": wait}, {"Retry-After": str(wait)}
    for field, value in (("code", code), ("name", name)):
        if isinstance(value, str) and (ch := control_char(value)) is not None:
            return 400, {"error": f"the {field} {control_message(ch)}", "code": "bad_request",
                         "field": field}, {}
    name = (name or "").strip() or "phone"
    if len(name) > MAX_NAME:
        return 400, {"error": f"a phone name is at most {MAX_NAME} characters", "code": "bad_name",
                     "field": "name"}, {}
    try:
        result = box().call("pair_complete", {"code": code or "", "name": name, "client": client})
    except BoxDown:
        return 503, {"error": f"cannot pair now: {DOWN_MESSAGE}", "code": "box_down"}, {}
    except BoxRefused as exc:
        return 400, {"error": str(exc), "code": "refused"}, {}
    if "refused" in result:
        reason = result["refused"]
        wait = int(result.get("retry_after") or 0)
        if reason == "wrong_code":
            wait = max(wait, throttle.failed(client))
        if wait:
            return 429, {"error": f"{result['message']}: wait {wait} s", "code": reason,
                         "retry_after": wait}, {"Retry-After": str(wait)}
        return 400, {"error": result["message"], "code": reason, "field": "code"}, {}
    throttle.succeeded(client)
    start_session(current_app, result["secret"])   # the box's opaque id is all the cookie holds
    current_app.extensions["vrmbox_sessions"].forget()
    log.info("phone %s paired from %s", result["phone"], client)
    return 200, {"phone": result["phone"], "name": result["name"]}, {}


@bp.route("/pair", methods=["GET", "POST"])
def pair() -> Any:
    phone = current_phone(current_app)
    if request.method == "GET":
        if phone:
            return redirect(url_for("dashboard.index"))
        if not box().running():
            g.box_down = True
        return render_template("pair.html", error=None, name="")
    if errors := form_errors(request.form, ("code", "name")):
        return Response(render_template("pair.html", error=summary(errors), field=None,
                                        name=request.form.get("name", "")[:MAX_NAME]),
                        status=400, mimetype="text/html")
    status, body, headers = attempt_pairing(request.form.get("code", ""), request.form.get("name", ""))
    if status == 200:
        return redirect(url_for("dashboard.index"))
    resp = Response(render_template("pair.html", error=body["error"], field=body.get("field"),
                                    name=request.form.get("name", "")[:MAX_NAME]),
                    status=status, mimetype="text/html")
    for k, v in headers.items():
        resp.headers[k] = v
    return resp


@bp.route("/unpair", methods=["POST"])
def unpair_self() -> Any:
    """This phone forgets itself (the box forgets it too)."""
    phone = g.get("phone")
    if phone:
        try:
            box().call("phone_unpair", {"phone": phone["phone"]})
        except (BoxDown, BoxRefused) as exc:
            return _refuse(503, f"not unpaired: {exc}", "box_down")
    current_app.extensions["vrmbox_sessions"].forget()
    session.clear()
    return redirect(url_for("auth.pair"))
