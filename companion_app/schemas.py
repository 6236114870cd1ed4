"""JSON Schemas of the API's requests and answers (OpenAPI 3.1 uses JSON Schema 2020-12), used
both to check incoming bodies and to write the OpenAPI document."""
from __future__ import annotations

from typing import Any

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$"}
SLUG = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$"}
FIELD = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
PHONE_ID = {"type": "string", "pattern": "^ph-[0-9a-f]{12}$"}
OBJECT: dict[str, Any] = {"type": "object"}
ANY_JSON: dict[str, Any] = {"type": ["object", "array"]}
NUM_OR_NULL = {"type": ["number", "null"]}
STR_OR_NULL = {"type": ["string", "null"]}


def text(max_len: int, min_len: int = 0) -> dict[str, Any]:
    return {"type": "string", "minLength": min_len, "maxLength": max_len}


def obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required or [],
            "additionalProperties": False}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


SCALAR = {"type": ["string", "number", "boolean"]}
INTENT_NEW = obj({"category": SLUG, "description": text(500),
                  "attributes": {"type": "object", "maxProperties": 50,
                                 "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,63}$"},
                                 "additionalProperties": {"anyOf": [
                                     {"type": "string", "maxLength": 200}, {"type": "number"},
                                     {"type": "boolean"}]}},
                  "ttl": {"type": "integer", "minimum": 60, "maximum": 31622400}}, ["category"])
ACCEPT = obj({"fields": {"type": "array", "items": FIELD, "minItems": 1, "maxItems": 50},
              "purpose": text(200, 1), "duration_days": {"type": "integer", "minimum": 1, "maximum": 3650}},
             ["fields"])
PAIR = obj({"code": text(40, 1), "name": text(64)}, ["code"])
INTENT = {"type": "object", "required": ["intent", "category", "status"],
          "properties": {"intent": {"type": "string"}, "category": {"type": "string"},
                         "status": {"type": "string"}, "expires_at": {"type": "integer"},
                         "offers": {"type": "integer"}}}
OFFER = {"type": "object", "required": ["offer", "intent", "vendor", "eligible", "score", "explanation"],
         "properties": {"offer": {"type": "string"}, "intent": {"type": "string"},
                        "vendor": {"type": "string"}, "item": STR_OR_NULL, "price": NUM_OR_NULL,
                        "currency": STR_OR_NULL, "eligible": {"type": "boolean"},
                        "delivery_days": {"type": ["integer", "null"]}, "region": STR_OR_NULL,
                        "score": {"type": "number"}, "status": {"type": "string"},
                        "explanation": {"type": "object"}}}
AGREEMENT = {"type": "object", "required": ["agreement", "vendor", "status"],
             "properties": {"agreement": {"type": "string"}, "vendor": {"type": "string"},
                            "status": {"type": "string"}, "fields": {"type": ["array", "null"]},
                            "revocation": STR_OR_NULL}}
VENDOR = {"type": "object", "required": ["vendor", "status", "key_changed"],
          "properties": {"vendor": {"type": "string"}, "did": {"type": "string"},
                         "status": {"type": "string"}, "key_changed": {"type": "boolean"}}}
PHONE = {"type": "object", "required": ["phone", "name"],
         "properties": {"phone": {"type": "string"}, "name": {"type": "string"},
                        "created": {"type": ["integer", "null"]}, "last_seen": {"type": ["integer", "null"]}}}
ERROR = {"type": "object", "required": ["error", "code"],
         "properties": {"error": {"type": "string"}, "code": {"type": "string"},
                        "field": {"type": "string"}, "retry_after": {"type": "integer"}}}
SESSION = {"type": "object", "required": ["paired", "csrf_token"],
           "properties": {"paired": {"type": "boolean"}, "phone": {"type": ["object", "null"]},
                          "csrf_token": {"type": "string"}}}
HELD = {"type": "object", "required": ["status", "request"],
        "properties": {"status": {"const": "waiting_for_button"}, "request": {"type": ["string", "integer"]},
                       "what": {"type": "string"}, "message": {"type": "string"}}}
