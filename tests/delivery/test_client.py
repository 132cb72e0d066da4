"""The client counts only Heap's acknowledgement: a 200 from the track API, never a redirect, another
2xx or a page from something in between; Retry-After parsed in every form (the bundled emulator)."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from tests.helpers import configure, stats
from walkme_heap.delivery.client import HeapClient, HeapRequestError, parse_retry_after
from walkme_heap.emulator import EmulatorSettings, HeapEmulator

BODY = b'{"app_id":"app","events":[{"identity":"u1","event":"E","idempotency_key":"key-00000001"}]}'


def refused(emulator: HeapEmulator, **intercept: object) -> HeapRequestError:
    configure(emulator, intercept=intercept)
    with pytest.raises(HeapRequestError) as info:
        HeapClient(emulator.url, "app").post(BODY)
    assert not info.value.retryable and not info.value.rejects_content
    return info.value


@pytest.mark.parametrize("status", [301, 302, 303])
def test_a_redirect_is_not_followed_and_never_an_acknowledgement(emulator: HeapEmulator, status: int) -> None:
    # Followed, a 301/302 becomes a GET that the health page answers 200: counted as sent before.
    location = f"{emulator.url}/_emulator/health"
    error = refused(emulator, status=status, headers={"Location": location})
    assert error.status == status
    assert location in str(error) and "redirect" in str(error)
    assert "heapanalytics.com" in str(error)  # what the host should be


def test_a_307_does_not_re_post_the_events_elsewhere(emulator: HeapEmulator) -> None:
    with HeapEmulator(settings=EmulatorSettings()) as elsewhere:
        location = f"{elsewhere.url}/api/track"
        error = refused(emulator, status=307, headers={"Location": location})
        assert error.status == 307 and location in str(error)
        assert "requests" not in stats(elsewhere)  # nothing went to the other address


@pytest.mark.parametrize("status", [201, 202, 204])
def test_a_2xx_other_than_200_is_not_heaps_acknowledgement(emulator: HeapEmulator, status: int) -> None:
    error = refused(
        emulator, status=status, body="" if status == 204 else "{}", content_type="application/json"
    )
    assert error.status == status and "200" in str(error)


@pytest.mark.parametrize("content_type", ["text/html", "application/json"])
def test_a_200_html_page_is_not_heaps_acknowledgement(emulator: HeapEmulator, content_type: str) -> None:
    page = "\n  <!DOCTYPE html><html><body>Please sign in to the network</body></html>"
    error = refused(emulator, status=200, body=page, content_type=content_type)
    assert error.status == 200 and "HTML" in str(error)


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "proxy"), (403, "proxy"), (404, "host")],
)
def test_auth_and_wrong_url_answers_say_what_to_check(emulator: HeapEmulator, status: int, hint: str) -> None:
    error = refused(emulator, status=status, body="<html>no</html>")
    assert error.status == status and hint in str(error)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [("", "text/plain"), ("", "text/html; charset=utf-8"), ("OK", "text/plain"), ("{}", "application/json")],
)
def test_heaps_200_without_a_page_is_an_acknowledgement(
    emulator: HeapEmulator, body: str, content_type: str
) -> None:
    """Heap documents no body or Content-Type for its 200: only an HTML document is refused."""
    assert HeapClient(emulator.url, "app").post(BODY).status_code == 200  # the emulator's JSON answer
    configure(emulator, intercept={"status": 200, "body": body, "content_type": content_type})
    assert HeapClient(emulator.url, "app").post(BODY).status_code == 200


@pytest.mark.parametrize("form", ["seconds", "date", "date-0000", "date-nozone", "zero", "past"])
def test_retry_after_in_every_form_from_the_emulator(form: str) -> None:
    """A wait in seconds or as a date (with or without a zone); none for 0 or a date already past
    (the sender then backs off with jitter instead of sending again at once)."""
    settings = EmulatorSettings(app_limit=1, identity_limit=None, retry_after=True, retry_after_form=form)
    with HeapEmulator(settings=settings) as emulator:
        client = HeapClient(emulator.url, "app")
        client.post(BODY)
        with pytest.raises(HeapRequestError) as info:
            client.post(BODY)
    assert info.value.status == 429
    if form in ("zero", "past"):
        assert info.value.retry_after is None
    else:
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 62


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        ("2.5", 2.5),
        ("0", None),
        ("-3", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("", None),
        (formatdate(1_000_030, usegmt=True), 30.0),
        (formatdate(1_000_030, usegmt=True).replace("GMT", "-0000"), 30.0),
        (formatdate(1_000_030, usegmt=True).removesuffix(" GMT"), 30.0),
        (formatdate(1_000_030, usegmt=True).replace("GMT", "+0100"), None),  # an hour ago
        (formatdate(999_000, usegmt=True), None),
    ],
)
def test_parse_retry_after(value: str, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000.0) == expected
