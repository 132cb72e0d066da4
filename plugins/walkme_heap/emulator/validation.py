"""Strict validation of Heap track and add_user_properties bodies, as heap-track-api.md documents.

The emulator answers 400 with the path of the first offending field, in the style of Heap's own
validator (``postBody.events[3].identity ...``), so a client that passes here sends what Heap takes.

``add_user_properties`` (``validate_user_properties_body``): the reference documents the two forms,
1000 users per request, values "string or number, fewer than 1024 characters", any casing of ``id``
reserved and ``email`` filling Heap's Email. Where it is silent this emulator chose strictly, and a
client must not rely on Heap being looser:

- identity and properties follow the track rules (identity a non-empty string of at most 255
  characters; properties a flat object of string or number values, keys and string values under
  1024 characters). ``user_id`` is not accepted: the reference names only ``identity``.
- ``properties`` is required and may not be empty (``should be object``): an empty update changes
  nothing, and on track the same validator family answered an empty object with exactly that 400.
- a property named ``id`` in any casing is refused with 400 (reserved); ``email`` is an ordinary
  string here (Heap files it as Email); other casings of ``email`` are ordinary properties.
- a field the reference does not name is refused (``postBody.x is not allowed``), as on track.
- a bulk request naming one identity twice is refused (``postBody.users[3].identity repeats
  postBody.users[1]``): which of the two Heap would keep is undocumented.
- one bad user fails the whole bulk request, as the track validator's message path suggests.
"""

from __future__ import annotations

import math
import re
from typing import Any

MAX_EVENTS_PER_REQUEST = 1000
MAX_USERS_PER_REQUEST = 1000  # bulk add_user_properties
MAX_EVENT_NAME_CHARS = 1024
MAX_IDENTITY_CHARS = 255
MAX_PROPERTY_CHARS = 1023  # "fewer than 1024 characters"
MIN_IDEMPOTENCY_KEY_CHARS = 8
MAX_USER_ID = 2**53 - 1

EVENT_FIELDS = frozenset(
    {"event", "identity", "user_id", "timestamp", "properties", "idempotency_key", "session_id"}
)
USER_FIELDS = frozenset({"identity", "properties"})
RESERVED_USER_PROPERTY = "id"  # any casing

# ISO 8601 date-time with an explicit offset (Z or +hh:mm / +hhmm); fractions optional.
_ISO_WITH_OFFSET = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})$"
)


class HeapValidationError(ValueError):
    """A body Heap would refuse with 400; ``str()`` is the message the emulator returns."""


def _check_timestamp(value: Any, path: str) -> None:
    if not isinstance(value, str):
        raise HeapValidationError(f"{path} should be string")
    m = _ISO_WITH_OFFSET.fullmatch(value)  # "$" alone would let a trailing newline through
    if not m:
        raise HeapValidationError(f"{path} should be an ISO 8601 date-time with an offset")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        raise HeapValidationError(f"{path} is not a valid date-time")
    if year < 1:
        raise HeapValidationError(f"{path} is not a valid date-time")


def _check_identity(identity: Any, path: str) -> None:
    if not isinstance(identity, str) or not identity:
        raise HeapValidationError(f"{path} should be a non-empty string")
    if len(identity) > MAX_IDENTITY_CHARS:
        raise HeapValidationError(f"{path} should have at most 255 characters")


def _check_properties(value: Any, path: str) -> None:
    if not isinstance(value, dict) or not value:
        raise HeapValidationError(f"{path} should be object")
    for key, item in value.items():
        if len(key) >= 1024:
            raise HeapValidationError(f"{path} key should have fewer than 1024 characters")
        item_path = f"{path}['{key[:40]}']"
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise HeapValidationError(f"{item_path} should be string or number")
        if isinstance(item, float) and not math.isfinite(item):
            raise HeapValidationError(f"{item_path} should be a finite number")
        if isinstance(item, str) and len(item) > MAX_PROPERTY_CHARS:
            raise HeapValidationError(f"{item_path} should have fewer than 1024 characters")


def validate_event(event: Any, path: str, *, in_bulk: bool) -> None:
    """Raise HeapValidationError for the first rule ``event`` breaks."""
    if not isinstance(event, dict):
        raise HeapValidationError(f"{path} should be object")
    allowed = EVENT_FIELDS if in_bulk else EVENT_FIELDS | {"app_id"}
    for key in event:
        if key not in allowed:
            raise HeapValidationError(f"{path}.{key} is not allowed")
    name = event.get("event")
    if not isinstance(name, str) or not name:
        raise HeapValidationError(f"{path}.event should be a non-empty string")
    if len(name) > MAX_EVENT_NAME_CHARS:
        raise HeapValidationError(f"{path}.event should have at most 1024 characters")
    has_identity = "identity" in event
    has_user_id = "user_id" in event
    if has_identity == has_user_id:
        raise HeapValidationError(f"{path} should have exactly one of identity, user_id")
    if has_identity:
        _check_identity(event["identity"], f"{path}.identity")
    else:
        user_id = event["user_id"]
        if not isinstance(user_id, str) or not user_id.isdigit() or int(user_id) > MAX_USER_ID:
            raise HeapValidationError(f"{path}.user_id should be a numeric string below 2^53")
    if "timestamp" in event:
        _check_timestamp(event["timestamp"], f"{path}.timestamp")
    if "properties" in event:
        _check_properties(event["properties"], f"{path}.properties")
    if "idempotency_key" in event:
        key = event["idempotency_key"]
        if not isinstance(key, str) or len(key) < MIN_IDEMPOTENCY_KEY_CHARS:
            raise HeapValidationError(f"{path}.idempotency_key should be a string of at least 8 characters")
    if "session_id" in event and not isinstance(event["session_id"], str):
        raise HeapValidationError(f"{path}.session_id should be string")


# The fast path's stricter twins of the rules above (full match, no year 0000, ranges in the pattern).
_FAST_TIMESTAMP = re.compile(
    r"(?!0000)\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])T(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)"
    r"(?:\.\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})"
).fullmatch
_BULK_KEYS = frozenset({"app_id", "events"})


def fast_accepts(body: Any) -> bool:
    """True only for a bulk body of identity events that certainly passes ``check_body``.

    An accelerator, not a second contract: it checks the same rules (some more strictly) in one
    tight loop over JSON-decoded values (plain types, so ``type() is`` holds). Anything it is not
    sure of goes to the full validator, which alone decides what is refused and why.
    """
    if type(body) is not dict or body.keys() != _BULK_KEYS:
        return False
    app_id, events = body["app_id"], body["events"]
    if type(app_id) is not str or not app_id or type(events) is not list:
        return False
    if not 0 < len(events) <= MAX_EVENTS_PER_REQUEST:
        return False
    fields, timestamp_ok, isfinite = EVENT_FIELDS, _FAST_TIMESTAMP, math.isfinite
    for event in events:
        if type(event) is not dict or not event.keys() <= fields or "user_id" in event:
            return False
        name, identity = event.get("event"), event.get("identity")
        if type(name) is not str or not 0 < len(name) <= MAX_EVENT_NAME_CHARS:
            return False
        if type(identity) is not str or not 0 < len(identity) <= MAX_IDENTITY_CHARS:
            return False
        stamp = event.get("timestamp")
        if stamp is not None and (type(stamp) is not str or timestamp_ok(stamp) is None):
            return False
        key = event.get("idempotency_key")
        if key is not None and (type(key) is not str or len(key) < MIN_IDEMPOTENCY_KEY_CHARS):
            return False
        if "session_id" in event and type(event["session_id"]) is not str:
            return False
        if ("timestamp" in event and stamp is None) or ("idempotency_key" in event and key is None):
            return False
        if "properties" in event:
            properties = event["properties"]
            if type(properties) is not dict or not properties:
                return False
            for prop, value in properties.items():
                kind = type(value)
                if len(prop) > MAX_PROPERTY_CHARS:
                    return False
                if kind is str:
                    if len(value) > MAX_PROPERTY_CHARS:
                        return False
                elif kind is not int and (kind is not float or not isfinite(value)):
                    return False
    return True


def validate_body(body: Any) -> tuple[str, list[dict[str, Any]]]:
    """Validate a single or bulk track body; return (app_id, events). Plain bulk bodies take the
    fast path; anything it is not sure of is decided by the full rules (``check_body``)."""
    if fast_accepts(body):
        return body["app_id"], body["events"]
    return check_body(body)


def check_body(body: Any) -> tuple[str, list[dict[str, Any]]]:
    """The full rules, always: return (app_id, events) or raise HeapValidationError."""
    if not isinstance(body, dict):
        raise HeapValidationError("postBody should be object")
    app_id = body.get("app_id")
    if not isinstance(app_id, str) or not app_id:
        raise HeapValidationError("postBody.app_id should be a non-empty string")
    if "events" not in body:
        validate_event(body, "postBody", in_bulk=False)
        event = {k: v for k, v in body.items() if k != "app_id"}
        return app_id, [event]
    for key in body:
        if key not in ("app_id", "events"):
            raise HeapValidationError(f"postBody.{key} is not allowed")
    events = body["events"]
    if not isinstance(events, list) or not events:
        raise HeapValidationError("postBody.events should be a non-empty array")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise HeapValidationError("postBody.events should have at most 1000 items")
    for index, event in enumerate(events):
        validate_event(event, f"postBody.events[{index}]", in_bulk=True)
    return app_id, events


def validate_user(user: Any, path: str, *, in_bulk: bool) -> str:
    """Raise HeapValidationError for the first rule an add_user_properties ``user`` breaks; return
    its identity."""
    if not isinstance(user, dict):
        raise HeapValidationError(f"{path} should be object")
    allowed = USER_FIELDS if in_bulk else USER_FIELDS | {"app_id"}
    for key in user:
        if key not in allowed:
            raise HeapValidationError(f"{path}.{key} is not allowed")
    if "identity" not in user:
        raise HeapValidationError(f"{path}.identity is required")
    _check_identity(user["identity"], f"{path}.identity")
    if "properties" not in user:
        raise HeapValidationError(f"{path}.properties is required")
    properties = user["properties"]
    _check_properties(properties, f"{path}.properties")
    for key in properties:
        if key.lower() == RESERVED_USER_PROPERTY:
            raise HeapValidationError(f"{path}.properties['{key}'] is reserved (any casing of id)")
    return user["identity"]


def validate_user_properties_body(body: Any) -> tuple[str, list[dict[str, Any]]]:
    """Validate a single or bulk add_user_properties body; return (app_id, users), each user
    ``{"identity", "properties"}``."""
    if not isinstance(body, dict):
        raise HeapValidationError("postBody should be object")
    app_id = body.get("app_id")
    if not isinstance(app_id, str) or not app_id:
        raise HeapValidationError("postBody.app_id should be a non-empty string")
    if "users" not in body:
        identity = validate_user(body, "postBody", in_bulk=False)
        return app_id, [{"identity": identity, "properties": body["properties"]}]
    for key in body:
        if key not in ("app_id", "users"):
            raise HeapValidationError(f"postBody.{key} is not allowed")
    users = body["users"]
    if not isinstance(users, list) or not users:
        raise HeapValidationError("postBody.users should be a non-empty array")
    if len(users) > MAX_USERS_PER_REQUEST:
        raise HeapValidationError(f"postBody.users should have at most {MAX_USERS_PER_REQUEST} items")
    first: dict[str, int] = {}
    for index, user in enumerate(users):
        identity = validate_user(user, f"postBody.users[{index}]", in_bulk=True)
        if identity in first:
            raise HeapValidationError(
                f"postBody.users[{index}].identity repeats postBody.users[{first[identity]}]"
            )
        first[identity] = index
    return app_id, users
