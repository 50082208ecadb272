"""Properties of the gateway's request validation (gateway_http/schemas.py, http.py), for any input hypothesis
finds (derandomized: the same examples every run).

- Every valid request body round-trips: the model accepts it, keeps every value (an integer written 2.0 becomes
  the int 2), and accepts its own dump and the same JSON text again.
- The model and the JSON Schema published for it in /openapi.json agree on every input, valid or not.
- Anything invalid is refused with ValidationError and `field_errors` gives {field: reason} strings; the whole
  body path (bytes → JSON → model) answers a model or an HttpError 400/415/422, never another exception.
"""

import json
import string

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway_http import schemas
from gateway_http.errors import HttpError
from gateway_http.http import MAX_JSON_DEPTH, parse_json_object
from gateway_http.router import Router
from gateway_http.routes import OPENAPI, ROUTES

PROPERTY_SETTINGS = settings(max_examples=200, derandomize=True, database=None, deadline=None)

# --- valid bodies ------------------------------------------------------------------------------------------------

skus = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")


def integral(low, high):
    """Integers from `low` to `high`, sometimes written as JSON Schema also counts them: 2.0."""
    return st.integers(min_value=low, max_value=high) | st.integers(min_value=low, max_value=high).map(float)


amounts = integral(0, schemas.MAX_AMOUNT)
names = st.text(min_size=1, max_size=200).filter(lambda name: name.strip() and "\x00" not in name)
descriptions = st.text(max_size=2000).filter(lambda text: "\x00" not in text)
_email_chars = "".join(ch for ch in map(chr, range(0x21, 0x7F)) if ch not in "@.")
_labels = st.text(alphabet=_email_chars, min_size=1, max_size=20)
emails = st.builds(
    lambda local, labels: f"{local}@{'.'.join(labels)}",
    st.text(alphabet=_email_chars + ".", min_size=1, max_size=30),
    st.lists(_labels, min_size=2, max_size=4),
)
passwords = st.text(min_size=8, max_size=128).filter(lambda text: "\x00" not in text)
lines = st.fixed_dictionaries({"sku": skus, "quantity": integral(1, 999)})

VALID = {
    schemas.Registration: st.fixed_dictionaries({"email": emails, "password": passwords}),
    schemas.Credentials: st.fixed_dictionaries(
        {
            "email": st.text(min_size=1, max_size=254).filter(lambda text: "\x00" not in text),
            "password": st.text(min_size=1, max_size=128).filter(lambda text: "\x00" not in text),
        }
    ),
    schemas.NewProduct: st.fixed_dictionaries(
        {"sku": skus, "name": names, "price_cents": amounts, "stock": amounts}, optional={"description": descriptions}
    ),
    schemas.ProductChanges: st.fixed_dictionaries(
        {}, optional={"name": names, "description": descriptions, "price_cents": amounts, "stock": amounts}
    ).filter(bool),
    schemas.NewLine: lines,
    schemas.NewCart: st.fixed_dictionaries({}, optional={"items": st.lists(lines, max_size=100)}),
    schemas.LineQuantity: st.fixed_dictionaries({"quantity": integral(0, 999)}),
    schemas.Checkout: st.fixed_dictionaries(
        {"payment": st.fixed_dictionaries({"card_number": st.from_regex(r"\A[0-9]{12,19}\Z")})}
    ),
}
BODY_MODELS = sorted({route.body for route in ROUTES if route.body is not None}, key=lambda model: model.__name__)


def test_every_request_body_has_a_strategy_here():
    assert set(BODY_MODELS) == set(VALID)


def published_validator(model):
    """A validator of `model`'s JSON Schema exactly as /openapi.json publishes it (its $refs resolved there)."""
    root = {
        "$ref": f"#/components/schemas/{model.__name__}",
        "components": {"schemas": OPENAPI["components"]["schemas"]},
    }
    return jsonschema_rs.Draft202012Validator(root)


VALIDATORS = {model: published_validator(model) for model in BODY_MODELS}


def has_float(value):
    if isinstance(value, list):
        return any(has_float(item) for item in value)
    if isinstance(value, dict):
        return any(has_float(item) for item in value.values())
    return isinstance(value, float)


@pytest.mark.parametrize("model", BODY_MODELS, ids=lambda model: model.__name__)
def test_valid_bodies_round_trip(model):
    @PROPERTY_SETTINGS
    @given(data=VALID[model])
    def round_trip(data):
        parsed = model.model_validate(data)
        dumped = parsed.model_dump(exclude_unset=True)  # (ProductChanges keeps unset fields as None)
        assert dumped == data  # nothing the caller sent is changed or dropped, nothing added (2.0 == 2)
        assert not has_float(dumped)  # the services get ints
        assert model.model_validate(dumped) == parsed
        assert model.model_validate_json(json.dumps(data)) == parsed
        assert VALIDATORS[model].is_valid(data)

    round_trip()


# --- anything at all: the model and its published schema agree ---------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", " ", "\x00", "a\n", "tea", "A-1", "0@0", "a@b.c", "\u3000", "4242424242424242"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


def near(model):
    """Objects with the model's own field names (and sometimes a stranger) holding any values, and mutations of
    valid bodies: the inputs most likely to sit on a rule's edge."""
    fields = sorted(model.model_fields)
    with_own_names = st.dictionaries(st.sampled_from(fields + ["extra"]), json_values, max_size=len(fields) + 1)
    mutated = st.tuples(VALID[model], st.sampled_from(fields), json_values).map(
        lambda args: {**args[0], args[1]: args[2]}
    )
    return with_own_names | mutated | json_values


@pytest.mark.parametrize("model", BODY_MODELS, ids=lambda model: model.__name__)
def test_the_model_and_its_published_schema_agree_on_any_input(model):
    @settings(PROPERTY_SETTINGS, max_examples=400)
    @given(data=near(model))
    def agree(data):
        try:
            model.model_validate(data)
        except ValidationError as error:
            reported = schemas.field_errors(error)
            assert reported and all(
                isinstance(key, str) and isinstance(reason, str) and reason for key, reason in reported.items()
            )
            assert not VALIDATORS[model].is_valid(data), (data, reported)
        else:
            assert VALIDATORS[model].is_valid(data), data

    agree()


@PROPERTY_SETTINGS
@given(
    values=st.dictionaries(
        st.sampled_from(["limit", "offset", "q", "page"]), st.text(max_size=25) | st.from_regex(r"\A-?[0-9]{1,25}\Z")
    )
)
def test_query_strings_give_a_query_or_field_errors(values):
    try:
        query = schemas.ProductQuery.model_validate(values)
    except ValidationError as error:
        assert set(schemas.field_errors(error)) <= set(values)
    else:
        assert 1 <= query.limit <= 100 and 0 <= query.offset <= schemas.MAX_AMOUNT and "\x00" not in query.q


# --- the whole body path: bytes in, a model or an error envelope out ---------------------------------------------


def request_with(content_type):
    return Request(EnvironBuilder(method="POST", content_type=content_type).get_environ())


raw_bodies = (
    st.binary(max_size=64)
    | json_values.map(lambda value: json.dumps(value).encode())
    | json_values.map(lambda value: json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    | st.sampled_from(
        [
            b'{"a": 1, "a": 2}',
            b'{"s": "\\ud800"}',
            b"[" * 40 + b"]" * 40,
            b'{"a": ' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1),
            b'{"n": NaN}',
            b"\xef\xbb\xbf{}",
            b'{"x": "\x00"}',
        ]
    )
)
body_routes = [route for route in ROUTES if route.body is not None]


@PROPERTY_SETTINGS
@given(
    raw=raw_bodies,
    route=st.sampled_from(body_routes),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded",
        ]
    ),
)
def test_any_body_gives_a_model_or_an_error_envelope(raw, route, content_type):
    request = request_with(content_type)
    try:
        model = Router.body(route, request, raw)
    except HttpError as error:
        assert error.status in (400, 415, 422)
        body = error.body()["error"]
        assert body["code"] in ("bad_request", "unsupported_media_type", "validation_error") and body["message"]
        if error.status == 422:
            assert body["details"]["fields"]
    else:
        assert isinstance(model, route.body)


@PROPERTY_SETTINGS
@given(value=st.dictionaries(st.text(max_size=4), json_values, max_size=4), duplicate=st.text(max_size=4))
def test_a_repeated_key_anywhere_is_a_400(value, duplicate):
    text = json.dumps(value)
    inner = "{%s: 1, %s: 2}" % (json.dumps(duplicate), json.dumps(duplicate))
    raw = ('{"nested": %s, "rest": %s}' % (inner, text)).encode()
    with pytest.raises(HttpError) as refused:
        parse_json_object(request_with("application/json"), raw)
    assert refused.value.status == 400 and "more than once" in refused.value.message


@PROPERTY_SETTINGS
@given(depth=st.integers(min_value=1, max_value=3 * MAX_JSON_DEPTH), leaf=st.sampled_from(["1", '"x"', "[]", "{}"]))
def test_nesting_is_refused_past_the_limit_and_only_there(depth, leaf):
    raw = ('{"a": ' * depth + leaf + "}" * depth).encode()
    containers = depth + (leaf in ("[]", "{}"))
    if containers <= MAX_JSON_DEPTH:
        assert parse_json_object(request_with("application/json"), raw)
    else:
        with pytest.raises(HttpError) as refused:
            parse_json_object(request_with("application/json"), raw)
        assert refused.value.status == 400


@PROPERTY_SETTINGS
@given(
    text=st.text(alphabet=string.printable + "\u00e9\u4e2d\U0001f600", max_size=20),
    position=st.integers(min_value=0, max_value=20),
    half=st.sampled_from(["\\ud800", "\\udfff", "\\udc00"]),
)
def test_half_a_surrogate_pair_is_a_400_and_a_whole_one_is_fine(text, position, half):
    encoded = json.dumps(text)[1:-1]
    cut = min(position, len(encoded))
    while cut and encoded[cut - 1] == "\\":  # do not split an escape
        cut -= 1
    broken = ('{"name": "%s%s%s"}' % (encoded[:cut], half, encoded[cut:])).encode()
    with pytest.raises(HttpError) as refused:
        parse_json_object(request_with("application/json"), broken)
    assert refused.value.status == 400
    whole = ('{"name": "%s\\ud83d\\ude00"}' % encoded).encode()
    assert parse_json_object(request_with("application/json"), whole) == {"name": text + "\U0001f600"}
