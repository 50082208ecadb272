"""Form fields (always text) checked by the API's own request models (schemas.py), so a page accepts exactly what
the API accepts and says why it refuses, field by field."""

import re

from pydantic import ValidationError

from gateway_http.schemas import MAX_AMOUNT, field_errors

_WHOLE = re.compile(r"\s*[0-9]{1,10}\s*")
_PRICE = re.compile(r"\s*\$?\s*([0-9]{1,8})(?:\.([0-9]{1,2}))?\s*")
PRICE_REASON = "must be an amount such as 12.50"


def whole_number(text):
    """`text` as an int when it is plain digits; else `text` as it is, for the model to refuse with its reason."""
    return int(text) if isinstance(text, str) and _WHOLE.fullmatch(text) else text


def price_cents(text):
    """A price typed as "12.50", "12" or "$12.5" in cents; None when it is not one."""
    match = _PRICE.fullmatch(text or "")
    if not match:
        return None
    cents = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    return cents if cents <= MAX_AMOUNT else None


def validate(model, data):
    """(the model, {}) when `data` obeys `model`, else (None, {field: reason})."""
    try:
        return model.model_validate(data), {}
    except ValidationError as exc:
        return None, field_errors(exc)


def price_text(cents):
    """Cents as the price field shows them: 1250 → "12.50"."""
    return f"{cents // 100}.{cents % 100:02d}"
