"""Command line: serve the Heap emulator on loopback until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from walkme_heap.emulator.server import (
    DEFAULT_APP_LIMIT,
    DEFAULT_IDENTITY_LIMIT,
    DEFAULT_USER_PROPERTIES_LIMIT,
    EmulatorSettings,
    HeapEmulator,
)


def _limit(text: str) -> int | None:
    return None if text.lower() in ("off", "none", "0") else int(text)


def _api_key(text: str) -> tuple[str, str]:
    app_id, colon, key = text.partition(":")
    if not (app_id and colon and key):
        raise argparse.ArgumentTypeError("expected APP_ID:API_KEY")
    return app_id, key


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m walkme_heap.emulator",
        description="Serve a strict Heap track (and add_user_properties) API emulator on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--app-limit",
        type=_limit,
        default=DEFAULT_APP_LIMIT,
        help="events per 60 s per app_id, or 'off' (default %(default)s)",
    )
    parser.add_argument(
        "--identity-limit",
        type=_limit,
        default=DEFAULT_IDENTITY_LIMIT,
        help="events per 60 s per identity per app_id, or 'off' (default %(default)s)",
    )
    parser.add_argument(
        "--user-properties-limit",
        type=_limit,
        default=DEFAULT_USER_PROPERTIES_LIMIT,
        help="add_user_properties requests per 30 s per identity per app_id, or 'off' (default %(default)s)",
    )
    parser.add_argument("--retry-after", action="store_true", help="send Retry-After with 429")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    parser.add_argument("--latency-ms", type=int, default=0, help="delay before every answer")
    parser.add_argument(
        "--drop-rate", type=float, default=0.0, help="share of requests whose connection is closed unanswered"
    )
    parser.add_argument(
        "--no-store", action="store_true", help="count events but do not keep them (benchmarks)"
    )
    parser.add_argument(
        "--api-key",
        type=_api_key,
        action="append",
        default=[],
        metavar="APP_ID:API_KEY",
        help="a pair the auth endpoint accepts (repeatable; none: every key is refused)",
    )
    parser.add_argument("--jsonl", type=Path, help="also append every new event to this file")
    parser.add_argument("--port-file", type=Path, help="write the chosen port here once listening")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    same_names = (
        "app_limit",
        "identity_limit",
        "user_properties_limit",
        "retry_after",
        "error_rate",
        "latency_ms",
        "drop_rate",
    )
    settings = EmulatorSettings(
        store_events=not args.no_store,
        api_keys=dict(args.api_key),
        **{name: getattr(args, name) for name in same_names},
    )
    emulator = HeapEmulator(args.host, args.port, settings, args.jsonl)
    if args.port_file:
        args.port_file.write_text(str(emulator.httpd.server_address[1]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.info("Heap emulator listening on %s", emulator.url)
    try:
        emulator.httpd.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        emulator.httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
