"""Column presets for the two public WalkMe export shapes, and WalkMe's event vocabulary.

Headers are matched loosely (see ``columns.normalise_header``): ``wm.euId``, ``wm_euid`` and
``WM EUID`` are one column; ``End User ID`` and ``EndUserID`` are one column. A candidate may be a
glob over normalised headers (``*date&time(utc)``).
"""

from __future__ import annotations

# Role -> candidate headers, first present wins. Roles: identity, timestamp, event_type, item_type,
# item_id, session_id, environment, event_id.
PRESETS: dict[str, dict[str, list[str]]] = {
    "webhook": {
        "identity": ["wm.euId"],
        "timestamp": ["created_at"],
        "event_type": ["type"],
        "item_type": ["oType", "itemType", "wm.itemType"],
        "item_id": ["oId"],
        "session_id": ["sId"],
        "environment": ["wm.env"],
        "event_id": [],
    },
    "report": {
        "identity": ["End User ID"],
        "timestamp": ["*date&time(utc)"],
        "event_type": ["Event Type", "Action"],
        "item_type": ["Item Type"],
        "item_id": ["Survey ID", "Item ID", "Walk-Thru ID", "ShoutOut ID", "Launcher ID"],
        "session_id": ["Session ID"],
        "environment": ["Environment"],
        "event_id": [],
    },
}

# Columns a preset never sends as properties (besides the identity and time columns).
PRESET_EXCLUDED_PROPERTIES: dict[str, list[str]] = {
    "webhook": ["wm.env"],
    "report": ["Date (UTC)", "Environment"],
}

# The columns that describe the user rather than the event: what ``user_properties`` sends to Heap's
# add_user_properties when a pipeline names no columns of its own.
PRESET_USER_COLUMNS: dict[str, list[str]] = {
    "webhook": ["wm.userVars.*"],
    "report": ["User Name", "User Type", "User Role", "User Status", "User Info"],
}

ROLES = (
    "identity",
    "timestamp",
    "event_type",
    "item_type",
    "item_id",
    "session_id",
    "environment",
    "event_id",
)

# Human names from WalkMe's UI vocabulary; keys are lower-case WalkMe type codes.
ITEM_TYPE_NAMES: dict[str, str] = {
    "wt": "Walk-Thru",
    "swt": "Smart Walk-Thru",
    "step": "Walk-Thru Step",
    "shoutout": "ShoutOut",
    "launcher": "Launcher",
    "survey": "Survey",
    "question": "Survey Question",
    "answer": "Survey Answer",
    "resource": "Resource",
    "task": "Onboarding Task",
    "smarttip": "Smart Tip",
    "smarttipset": "Smart Tip Set",
    "player": "Menu",
    "course": "Course",
    "trackedelement": "Tracked Element",
    "engagedelement": "Engaged Element",
}

EVENT_TYPE_NAMES: dict[str, str] = {
    "play": "Played",
    "playfailed": "Play Failed",
    "click": "Clicked",
    "close": "Closed",
    "open": "Opened",
    "complete": "Completed",
    "goalreach": "Goal Reached",
    "submitted": "Submitted",
    "search": "Searched",
    "visible": "Visible",
    "passed": "Passed",
    "failed": "Failed",
    "custom": "Custom Event",
    "pagechange": "Page Changed",
}

# Pairs whose UI name is not "<item> <event>": (item type, event type) in lower case -> name.
PAIR_NAMES: dict[tuple[str, str], str] = {
    ("wt", "play"): "Walk-Thru Started",
    ("swt", "play"): "Smart Walk-Thru Started",
    ("shoutout", "play"): "ShoutOut Displayed",
    ("smarttip", "play"): "Smart Tip Displayed",
    ("launcher", "play"): "Launcher Displayed",
    ("survey", "play"): "Survey Displayed",
}
