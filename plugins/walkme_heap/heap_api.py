"""Heap's server-side API: where it is, what it documents, and our defaults where it is silent.

Every limit is stated here once (``heap-track-api.md`` is the source); the client, batcher, pacer,
mapping, hook and connection form import it. The emulator keeps its own copy on purpose: it is the
other side of the contract, and a change here must not silently change what it enforces.
"""

from __future__ import annotations

# -- where ----------------------------------------------------------------------------------------
US_BASE_URL = "https://heapanalytics.com"
EU_BASE_URL = "https://c.eu.heap-api.com"
REGIONS = {"us": US_BASE_URL, "eu": EU_BASE_URL}
TRACK_PATH = "/api/track"
USER_PROPERTIES_PATH = "/api/add_user_properties"  # single and bulk form
# HTTP Basic app_id:api_key -> a bearer token (about 5 minutes); writes nothing (user-deletion API).
AUTH_TOKEN_PATH = "/api/public/v0/auth_token"

# -- what Heap documents --------------------------------------------------------------------------
MAX_EVENTS_PER_REQUEST = 1000  # bulk track
APP_EVENTS_PER_MINUTE = 15_000  # bulk track, per app_id
IDENTITY_EVENTS_PER_MINUTE = 1_000  # bulk track, per identity per app_id
RATE_WINDOW_SECONDS = 60.0  # "per minute"
MAX_IDENTITY_CHARS = 255
MAX_PROPERTY_CHARS = 1023  # "fewer than 1024 characters"
# Heap takes event names of up to 1024 characters; its browser SDK caps them at 255, the safe cap.
MAX_EVENT_NAME_CHARS = 255
MAX_USERS_PER_REQUEST = 1000  # bulk add_user_properties
USER_PROPERTIES_REQUESTS_PER_WINDOW = 30  # add_user_properties, per identity per app_id ...
USER_PROPERTIES_WINDOW_SECONDS = 30.0  # ... per 30 seconds (single and bulk form alike)
RESERVED_USER_PROPERTY = "id"  # any casing; refused as a user property name
EMAIL_USER_PROPERTY = "email"  # lower case: fills Heap's built-in Email

# -- our defaults where Heap documents nothing ----------------------------------------------------
DEFAULT_MAX_BATCH_BYTES = 1_000_000  # no documented body cap: stay well below any plausible one
DEFAULT_RETRY_SECONDS = 300.0  # per batch, from its first attempt; then the run stops (and resumes)
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
