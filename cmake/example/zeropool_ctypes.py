"""Use libzeropool.so from Python through ctypes, with no bindings.

    python3 zeropool_ctypes.py /path/to/prefix/lib/libzeropool.so
"""
import ctypes
import sys

ZP_OK, ZP_ERR_FOREIGN_BUFFER, ZP_ERR_DOUBLE_PUT, ZP_ERR_TOO_LARGE = 0, 5, 7, 4


class Stats(ctypes.Structure):
    """zp_stats: uint64_t counters, in header order."""
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "gets", "puts", "tls_hits", "shard_hits", "allocations", "evictions",
        "pooled_buffers", "pooled_bytes", "outstanding", "pin_failures", "rejected_puts",
        "allocated_bytes", "dirty_gets")]


def load(path):
    lib = ctypes.CDLL(path)
    vp, u32 = ctypes.c_void_p, ctypes.c_uint32
    for name, res, args in [
        ("zp_pool_new", vp, []),
        ("zp_pool_free", None, [vp]),
        ("zp_get", vp, [vp, ctypes.c_size_t]),
        ("zp_put", u32, [vp, vp]),
        ("zp_last_error", u32, []),
        ("zp_pool_stats", u32, [vp, ctypes.POINTER(Stats)]),
        ("zp_status_str", ctypes.c_char_p, [u32]),
        ("zp_version", ctypes.c_char_p, []),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


def main(path):
    lib = load(path)
    pool = lib.zp_pool_new()
    assert pool, "zp_pool_new failed"

    buf = lib.zp_get(pool, 4096)
    assert buf and ctypes.string_at(buf, 4096) == bytes(4096), "buffers start zeroed"
    ctypes.memmove(buf, b"secret", 6)
    assert lib.zp_put(pool, buf) == ZP_OK
    again = lib.zp_get(pool, 4096)
    assert again == buf and ctypes.string_at(again, 6) == bytes(6), "reused and scrubbed"
    assert lib.zp_put(pool, again) == ZP_OK

    status = lib.zp_put(pool, again)
    assert status == ZP_ERR_DOUBLE_PUT, lib.zp_status_str(status)
    scratch = ctypes.create_string_buffer(64)
    assert lib.zp_put(pool, ctypes.addressof(scratch)) == ZP_ERR_FOREIGN_BUFFER
    assert lib.zp_get(pool, 2**64 - 1) is None and lib.zp_last_error() == ZP_ERR_TOO_LARGE

    stats = Stats()
    assert lib.zp_pool_stats(pool, ctypes.byref(stats)) == ZP_OK
    assert (stats.gets, stats.puts, stats.rejected_puts) == (2, 2, 2), (stats.gets, stats.puts)
    lib.zp_pool_free(pool)
    print("ctypes: zeropool %s ok (%s)" % (lib.zp_version().decode(), lib.zp_status_str(ZP_ERR_DOUBLE_PUT).decode()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "libzeropool.so")
