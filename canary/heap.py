"""Keep the C allocator from holding on to large watch events (issue 10.5).

ConfigMaps and Secrets arrive through the watches whole (a tenant may keep hundreds of 1 MiB
ConfigMaps); the caches keep only checksums, so each event's buffers are garbage at once. glibc
serves blocks above its mmap threshold (128 KiB) with mmap and returns them on free, but its
*dynamic* threshold rises to the size of the largest block freed: after the first 1 MiB event,
every later one was carved from the heap, which fragments and does not shrink. Measured with
300 ConfigMaps of 1 MiB (`python -m bench.config_memory --configmaps 300 --kib 1000`): RSS
252 MiB after they passed through the watch and 347 MiB when started with them there, against
93 MiB without them; with the threshold pinned, 108 and 106 MiB.

Pinning the threshold (mallopt M_MMAP_THRESHOLD, which also turns the dynamic adjustment off)
is what `MALLOC_MMAP_THRESHOLD_=131072` does, set from inside so that every way of starting
the operator gets it. Without glibc (musl), nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("canary.heap")

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's default, made fixed


def pin_mmap_threshold(size: int = MMAP_THRESHOLD) -> bool:
    """True if the allocator took it."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, size) == 1
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) was refused")
    return ok
