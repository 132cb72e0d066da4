"""Delivery: batches within Heap's request caps, and the HTTP client for the bulk track API."""
