"""Giving freed heap memory back to the operating system."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only: musl has none
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return the free pages of glibc's heap to the system (``malloc_trim(0)``).

    A long loop of large, short-lived buffers (a batch's activations, decoded blocks) leaves the
    heap fragmented: freed memory stays mapped, and the resident size creeps up with the number
    of iterations although nothing is held. Calling this between iterations keeps it flat.
    Returns whether memory was released; ``False`` where glibc's allocator is not in use.
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
