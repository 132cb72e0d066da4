"""The bundled Heap emulator: ``python -m walkme_heap.emulator --help``."""

from walkme_heap.emulator.server import EmulatorSettings, HeapEmulator

__all__ = ["EmulatorSettings", "HeapEmulator"]
