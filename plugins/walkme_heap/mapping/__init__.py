"""Map WalkMe rows to Heap events: presets, columns, times, names, properties and keys."""
