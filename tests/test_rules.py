"""Rules: validation (each bad case names its path), every filter passing and failing, compile once."""
from __future__ import annotations

import copy
import json
from dataclasses import FrozenInstanceError, replace

import pytest

from device import ranking, rules
from device.reputation import reputation_from
from device.rules import Context, Money, OfferFacts, RulesError, compile_rules, default_rules, validate_rules
from vrm_protocol import messages

NOW = 1_800_000_000

EXAMPLE = {
    "version": 1,
    "filters": {"max_price": {"amount": 800, "currency": "EUR"}, "currencies": ["EUR"],
                "regions": ["GB"], "min_validity_s": 3600, "require_terms_accepted": True,
                "vendors_allow": [], "vendors_block": ["spammy"], "categories": ["bikes"],
                "attributes": [{"path": "item.attributes.colour", "op": "in", "value": ["red", "blue"]}]},
    "weights": {"price": 1.0, "known_supplier": 0.5, "reputation": 0.5, "delivery": 0.3,
                "brands_liked": 0.4, "brands_disliked": 0.8,
                "attributes": [{"path": "item.attributes.gears", "prefer": "high", "weight": 0.2}]},
    "brands": {"liked": ["Brompton"], "disliked": []},
}


def facts(**kw) -> OfferFacts:
    base = dict(offer_id="o1", intent_id="intent-0001", vendor="acme", category="bikes",
                price=700.0, currency="EUR", valid_until=NOW + 86400, delivery_days=3,
                region="GB", terms_accepted=True, brand="Brompton", item_name="Folding bike",
                attributes={"colour": "red", "gears": 6}, received_at=NOW - 10)
    base.update(kw)
    return OfferFacts(**base)


def with_filters(**f) -> dict:
    return {"filters": f}


# ------------------------------------------------------------------------------ validation
def test_example_and_defaults_validate():
    out = validate_rules(EXAMPLE)
    assert out["filters"]["max_price"] == {"amount": 800.0, "currency": "EUR"}
    assert out["weights"]["attributes"][0] == {"path": "item.attributes.gears", "prefer": "high",
                                               "weight": 0.2}
    d = validate_rules(default_rules())
    assert d["filters"] == {"require_terms_accepted": True}
    assert d["weights"]["price"] == 1.0
    assert all(0 < d["weights"][k] < 1 for k in rules.WEIGHT_KEYS if k != "price")
    assert validate_rules(json.loads(json.dumps(d))) == d          # normalised form is a fixpoint


def test_missing_weights_take_defaults_and_lists_dedupe():
    out = validate_rules({"weights": {"price": 2}, "filters": {"currencies": ["EUR", "EUR", "GBP"]}})
    assert out["weights"]["price"] == 2.0
    assert out["weights"]["delivery"] == default_rules()["weights"]["delivery"]
    assert out["filters"]["currencies"] == ["EUR", "GBP"]
    assert out["brands"] == {"liked": [], "disliked": []}


def test_validate_does_not_change_input():
    data = copy.deepcopy(EXAMPLE)
    validate_rules(data)
    compile_rules(data)
    assert data == EXAMPLE


def _set(path: str, value):
    data = copy.deepcopy(EXAMPLE)
    keys = path.split(".")
    target = data
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    last = keys[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


BAD = [
    (_set("version", 2), "version"),
    (_set("version", True), "version"),
    (_set("colour", 1), "colour"),
    (_set("filters.colour", 1), "filters.colour"),
    (_set("filters", []), "filters"),
    (_set("filters.max_price.amount", -1), "filters.max_price.amount"),
    (_set("filters.max_price.amount", "800"), "filters.max_price.amount"),
    (_set("filters.max_price.amount", float("nan")), "filters.max_price.amount"),
    (_set("filters.max_price.amount", 1e13), "filters.max_price.amount"),
    (_set("filters.max_price.currency", "eur"), "filters.max_price.currency"),
    (_set("filters.max_price", {"amount": 1}), "filters.max_price.currency"),
    (_set("filters.max_price", {"amount": 1, "currency": "EUR", "fx": 1}), "filters.max_price.fx"),
    (_set("filters.currencies", ["EUR", "euro"]), "filters.currencies[1]"),
    (_set("filters.currencies", "EUR"), "filters.currencies"),
    (_set("filters.currencies", ["EUR"] * 101), "filters.currencies"),
    (_set("filters.regions", ["gb"]), "filters.regions[0]"),
    (_set("filters.min_validity_s", 1.5), "filters.min_validity_s"),
    (_set("filters.min_validity_s", -1), "filters.min_validity_s"),
    (_set("filters.max_delivery_days", 5000), "filters.max_delivery_days"),
    (_set("filters.require_terms_accepted", "yes"), "filters.require_terms_accepted"),
    (_set("filters.vendors_block", ["Spammy Ltd"]), "filters.vendors_block[0]"),
    (_set("filters.vendors_allow", ["spammy"]), "filters.vendors_block[0]"),
    (_set("filters.categories", [3]), "filters.categories[0]"),
    (_set("filters.attributes", {}), "filters.attributes"),
    (_set("filters.attributes.0.op", "regex"), "filters.attributes[0].op"),
    (_set("filters.attributes.0.path", "__class__"), "filters.attributes[0].path"),
    (_set("filters.attributes.0.path", "item.attributes."), "filters.attributes[0].path"),
    (_set("filters.attributes.0.value", []), "filters.attributes[0].value"),
    (_set("filters.attributes.0.value", [{"a": 1}]), "filters.attributes[0].value[0]"),
    (_set("filters.attributes.0", {"path": "price", "op": "lt", "value": "cheap"}),
     "filters.attributes[0].value"),
    (_set("filters.attributes.0", {"path": "price", "op": "lt"}), "filters.attributes[0].value"),
    (_set("filters.attributes.0", {"op": "exists"}), "filters.attributes[0].path"),
    (_set("filters.attributes.0", {"path": "region", "op": "exists", "value": 1}),
     "filters.attributes[0].value"),
    (_set("filters.attributes", [{"path": "price", "op": "exists"}] * 51), "filters.attributes"),
    (_set("weights.price", -0.5), "weights.price"),
    (_set("weights.price", 101), "weights.price"),
    (_set("weights.delivery", None), "weights.delivery"),
    (_set("weights.speed", 1), "weights.speed"),
    (_set("weights.attributes.0.prefer", "more"), "weights.attributes[0].prefer"),
    (_set("weights.attributes.0.weight", "x"), "weights.attributes[0].weight"),
    (_set("weights.attributes.0", {"path": "price", "prefer": "equals", "weight": 1}),
     "weights.attributes[0].value"),
    (_set("weights.attributes.0", {"path": "price", "prefer": "low", "value": 3, "weight": 1}),
     "weights.attributes[0].value"),
    (_set("weights.attributes.0", {"path": "price", "prefer": "low"}), "weights.attributes[0].weight"),
    (_set("brands.liked", ["x" * 201]), "brands.liked[0]"),
    (_set("brands.liked", [""]), "brands.liked[0]"),
    (_set("brands.disliked", ["brompton"]), "brands.disliked[0]"),
    (_set("brands.other", []), "brands.other"),
    ([], ""),
    ("rules", ""),
]


@pytest.mark.parametrize("data,path", BAD, ids=[p or "(root)" for _, p in BAD])
def test_validation_refuses_with_path(data, path):
    with pytest.raises(RulesError) as exc:
        validate_rules(data)
    assert exc.value.path == path
    assert (path or "(root)") in str(exc.value)
    with pytest.raises(RulesError):
        compile_rules(data) if isinstance(data, dict) else validate_rules(data)


def test_error_message_names_path_and_value():
    with pytest.raises(RulesError) as exc:
        validate_rules(_set("filters.max_price.amount", -5))
    assert str(exc.value).startswith("rules filters.max_price.amount = -5:")
    assert isinstance(exc.value, ValueError)


# ------------------------------------------------------------------------------ each filter
def check(rule_data: dict, f: OfferFacts, ctx: Context = Context(), now: int = NOW):
    return compile_rules(rule_data).check(f, ctx, now)


FILTER_CASES = [
    # (filters, passing facts, failing facts, filter name, text in the reason)
    ({"max_price": {"amount": 800, "currency": "EUR"}}, {"price": 800.0}, {"price": 950.0},
     "max_price", "max_price: 950 EUR > 800 EUR"),
    ({"max_price": {"amount": 800, "currency": "EUR"}}, {}, {"currency": "GBP", "price": 1.0},
     "max_price", "no conversion"),
    ({"currencies": ["EUR", "GBP"]}, {"currency": "GBP"}, {"currency": "USD"}, "currencies", "USD"),
    ({"regions": ["GB"]}, {"region": "GB-LND"}, {"region": "GBX"}, "regions", "GBX"),
    ({"regions": ["GB"]}, {"region": "gb"}, {"region": None}, "regions", "no region"),
    ({"min_validity_s": 3600}, {"valid_until": NOW + 3600}, {"valid_until": NOW + 3599},
     "min_validity_s", "need 3600 s"),
    ({"max_delivery_days": 5}, {"delivery_days": 5}, {"delivery_days": 6}, "max_delivery_days",
     "6 days > 5 days"),
    ({"max_delivery_days": 5}, {"delivery_days": 0}, {"delivery_days": None}, "max_delivery_days",
     "not given"),
    ({"require_terms_accepted": True}, {"terms_accepted": True}, {"terms_accepted": False},
     "require_terms_accepted", "did not accept"),
    ({"vendors_allow": ["acme", "bikeco"]}, {"vendor": "bikeco"}, {"vendor": "other"},
     "vendors_allow", "other"),
    ({"vendors_block": ["spammy"]}, {"vendor": "acme"}, {"vendor": "spammy"}, "vendors_block",
     "spammy is blocked"),
    ({"categories": ["bikes"]}, {"category": "bikes"}, {"category": "cars"}, "categories", "cars"),
]


@pytest.mark.parametrize("flt,good,bad,name,reason", FILTER_CASES,
                         ids=[f"{c[3]}-{i}" for i, c in enumerate(FILTER_CASES)])
def test_each_filter_passes_and_fails(flt, good, bad, name, reason):
    passed, failed = check(with_filters(**flt), facts(**good))
    assert name in passed and failed == ()
    passed, failed = check(with_filters(**flt), facts(**bad))
    assert name not in passed
    assert len(failed) == 1 and failed[0].startswith(f"{name}: ") and reason in failed[0]


def test_absent_or_empty_filters_are_not_applied():
    passed, failed = check({"filters": {"vendors_allow": [], "categories": []}},
                           facts(price=1e9, currency="XXX", region=None, terms_accepted=False,
                                 delivery_days=None, vendor="anyone", category="anything"))
    assert passed == ("not_expired",) and failed == ()


def test_expired_offers_always_fail():
    passed, failed = check({}, facts(valid_until=NOW - 5))
    assert failed == ("not_expired: expired 5 s ago",)
    passed, failed = check({}, facts(valid_until=NOW))
    assert failed and failed[0].startswith("not_expired")


def test_budget_from_context_is_a_filter():
    ctx = Context(budget=Money(500, "EUR"))
    assert check({}, facts(price=500.0), ctx)[1] == ()
    assert check({}, facts(price=501.0), ctx)[1] == ("budget: 501 EUR > 500 EUR",)
    assert "no conversion" in check({}, facts(currency="GBP"), ctx)[1][0]


def test_all_failures_are_listed():
    f = facts(price=950.0, vendor="spammy", terms_accepted=False, attributes={"colour": "green"})
    _, failed = check(EXAMPLE, f)
    names = [x.split(":")[0] for x in failed]
    assert names == ["require_terms_accepted", "max_price", "vendors_block", "item.attributes.colour"]


COND_CASES = [
    # (condition, passing attributes/facts, failing attributes/facts)
    ({"op": "eq", "value": "red"}, {"colour": "RED"}, {"colour": "blue"}),
    ({"op": "eq", "value": 3}, {"colour": 3.0}, {"colour": True}),
    ({"op": "eq", "value": True}, {"colour": True}, {"colour": 1}),
    ({"op": "ne", "value": "red"}, {"colour": "blue"}, {"colour": "Red"}),
    ({"op": "lt", "value": 5}, {"colour": 4}, {"colour": 5}),
    ({"op": "le", "value": 5}, {"colour": 5}, {"colour": 5.5}),
    ({"op": "gt", "value": 5}, {"colour": 6}, {"colour": 5}),
    ({"op": "ge", "value": 5}, {"colour": 5}, {"colour": "6"}),
    ({"op": "in", "value": ["red", "blue"]}, {"colour": "Blue"}, {"colour": "green"}),
    ({"op": "in", "value": ["red", "blue"]}, {"colour": ["green", "red"]}, {"colour": ["green"]}),
    ({"op": "not_in", "value": ["red", "blue"]}, {"colour": "green"}, {"colour": "red"}),
    ({"op": "not_in", "value": ["red"]}, {"colour": ["green"]}, {"colour": ["green", "red"]}),
    ({"op": "exists"}, {"colour": None}, {}),
    ({"op": "exists", "value": False}, {}, {"colour": "red"}),
    ({"op": "lt", "value": 1}, {"colour": 0}, {}),             # missing fails every comparison
    ({"op": "ne", "value": "red"}, {"colour": "green"}, {}),
    ({"op": "not_in", "value": ["red"]}, {"colour": "green"}, {}),
]


@pytest.mark.parametrize("cond,good,bad", COND_CASES)
def test_attribute_conditions(cond, good, bad):
    data = with_filters(attributes=[{"path": "item.attributes.colour", **cond}])
    passed, failed = check(data, facts(attributes=good))
    assert failed == () and "item.attributes.colour" in passed
    passed, failed = check(data, facts(attributes=bad))
    assert len(failed) == 1 and failed[0].startswith("item.attributes.colour: ")


def test_conditions_on_offer_fields():
    data = with_filters(attributes=[{"path": "item.brand", "op": "eq", "value": "brompton"},
                                    {"path": "delivery_days", "op": "le", "value": 2},
                                    {"path": "region", "op": "exists"}])
    assert check(data, facts(delivery_days=2))[1] == ()
    _, failed = check(data, facts(brand=None, delivery_days=3, region=None))
    assert failed == ("item.brand: missing", "delivery_days: 3, need <= 2",
                      "region: missing, need present")


def test_attribute_reason_text():
    _, failed = check(EXAMPLE, facts(attributes={"colour": "green"}))
    assert failed == ("item.attributes.colour: 'green', need one of ['red', 'blue']",)


# ------------------------------------------------------------------------------ compile once
def test_evaluate_never_revalidates(monkeypatch):
    compiled = compile_rules(EXAMPLE)

    def boom(*a, **k):
        raise AssertionError("validate_rules called after compile")
    monkeypatch.setattr(rules, "validate_rules", boom)
    monkeypatch.setattr(rules, "_getter", boom)          # nor re-parses paths
    offers = [facts(offer_id=f"o{i}", price=600.0 + i) for i in range(5)]
    out = ranking.rank(compiled, offers, Context(), NOW)
    assert [r.offer_id for r in out] == ["o0", "o1", "o2", "o3", "o4"]
    assert ranking.evaluate(compiled, offers[0], Context(), NOW).eligible
    with pytest.raises(AssertionError):
        compile_rules(EXAMPLE)                            # the patch is live: compile does call it


def test_compiled_rules_are_frozen():
    compiled = compile_rules(EXAMPLE)
    with pytest.raises(FrozenInstanceError):
        compiled.w_price = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        compiled.source["weights"] = {}                  # type: ignore[index]
    assert compiled.brands_liked == frozenset({"brompton"})
    assert compiled.vendors_allow is None                 # empty allow list = not applied


# ------------------------------------------------------------------------------ facts from an offer
def test_facts_from_protocol_offer():
    offer = messages.Offer(
        intent="intent-0001", vendor="acme",
        item=messages.Item(name="Folding bike", brand="Brompton", attributes={"gears": 6}),
        price=700.0, currency="EUR", valid_until=NOW + 100,
        terms_response=messages.TermsResponse(id="vrm-basic-1", sha256="a" * 43, decision="accept"),
        delivery_days=2)
    f = OfferFacts.from_offer("offer-0001", messages.body_to_dict(offer), "bikes", NOW)
    assert f == OfferFacts("offer-0001", "intent-0001", "acme", "bikes", 700.0, "EUR", NOW + 100,
                           2, None, True, "Brompton", "Folding bike", {"gears": 6}, NOW)
    body = messages.body_to_dict(replace(offer, terms_response=replace(offer.terms_response,
                                                                        decision="reject")))
    assert OfferFacts.from_offer("offer-0001", body, "bikes", NOW).terms_accepted is False
    with pytest.raises(ValueError):
        OfferFacts.from_offer("x", {"vendor": "acme"}, "bikes", NOW)


# ------------------------------------------------------------------------------ reputation
def test_reputation_formula():
    agreements = [
        {"vendor": "good", "status": "active"}, {"vendor": "good", "status": "ended"},
        {"vendor": "good", "status": "pending_confirmation"},                     # neutral
        {"vendor": "bad", "status": "revoked", "revocation_ack": None, "updated_at": NOW - 10 * 86400},
        {"vendor": "fine", "status": "revoked", "revocation_ack": "tok"},
        {"vendor": "kept", "status": "revoked", "delete": False},                 # no deletion asked
        {"vendor": "refused", "status": "revoked", "revocation_ack": "tok", "deleted": False},
        {"status": "active"}, "junk",
    ]
    reviews = [{"vendor": "good", "rating": 5}, {"vendor": "rated", "rating": 1},
               {"vendor": "rated", "rating": None}, {"vendor": "rated", "rating": 9}]
    rep = reputation_from(agreements, reviews)
    assert rep == pytest.approx({"good": (1 + 1 + 1) / (1 + 3), "bad": -2 / 3, "fine": 0.5,
                                 "refused": -2 / 3, "rated": -1 / 2})
    assert "kept" not in rep
    assert all(-1 < v < 1 for v in rep.values())


def test_reputation_grace_for_fresh_revocations():
    a = [{"vendor": "v", "status": "revoked", "revocation_ack": None, "updated_at": NOW - 60}]
    assert reputation_from(a, [], now=NOW) == {}
    assert reputation_from(a, [], now=NOW + 2 * 86400) == {"v": pytest.approx(-2 / 3)}
    assert reputation_from(a, []) == {"v": pytest.approx(-2 / 3)}


# ------------------------------------------------------------------ rules nested too deep
@pytest.mark.parametrize("depth", [33, 400, 989, 5000, 100_000])
def test_rules_nested_deep_are_refused_with_a_clear_error_not_a_recursion_error(depth):
    value: object = 0
    for _ in range(depth):
        value = [value]
    data = {"filters": {"attributes": [{"path": "price", "op": "eq", "value": value}]}}
    with pytest.raises(RulesError) as exc:
        validate_rules(data)
    assert "nested deeper than 32 levels" in str(exc.value) and len(str(exc.value)) < 200


def test_the_depth_limit_lets_every_valid_shape_through_and_counts_the_root_as_one():
    assert not rules.nesting_exceeds([[0]], 2) and rules.nesting_exceeds([[[0]]], 2)
    assert not rules.nesting_exceeds({"a": {"b": 1}}, 2) and rules.nesting_exceeds({"a": {"b": []}}, 2)
    validate_rules(json.loads(json.dumps(default_rules())))


def test_an_error_about_a_deep_value_is_shown_short():
    value: object = "x"
    for _ in range(20):
        value = [value]
    with pytest.raises(RulesError) as exc:
        validate_rules({"filters": {"attributes": [{"path": "price", "op": "eq", "value": value}]}})
    assert "[[[[...]]]]" in str(exc.value) and "must be a string" in str(exc.value)
