"""_lib: libclerk loaded with ctypes: its structs, prototypes and constants.

Mirrors clerk/include/clerk/clerk.h; tests/test_abi.py checks the struct
layouts and enum values against a program compiled from that header.
"""

import ctypes
import ctypes.util
import os

from ctypes import (POINTER, Structure, c_bool, c_char, c_char_p, c_int,
                    c_int64, c_size_t, c_uint, c_uint64, c_void_p)

# enum clerk_error, in clerk.h's order.
ERRORS = (
    "CLERK_OK", "CLERK_NOT_FOUND", "CLERK_CAS_MISMATCH",
    "CLERK_UNKNOWN_OUTCOME", "CLERK_UNAVAILABLE", "CLERK_TIMEOUT",
    "CLERK_BAD_REQUEST", "CLERK_VALUE_TOO_LARGE", "CLERK_NO_SPACE",
    "CLERK_INVALID", "CLERK_NOMEM", "CLERK_INTERNAL", "CLERK_DISABLED",
    "CLERK_SESSION_EXPIRED", "CLERK_UNAUTHENTICATED",
    "CLERK_PERMISSION_DENIED", "CLERK_COMPACTED", "CLERK_FUTURE_REVISION",
    "CLERK_LEASE_NOT_FOUND", "CLERK_NOT_HELD", "CLERK_CLOSED",
    "CLERK_TOO_MANY_KEYS",
)
for _i, _name in enumerate(ERRORS):
    globals()[_name] = _i

CLERK_READ_LINEARIZABLE = 0
CLERK_READ_STALE = 1
CLERK_READ_STALE_HEDGED = 2

CLERK_RANGE_KEYS_ONLY = 0x1
CLERK_RANGE_COUNT_ONLY = 0x2
CLERK_RANGE_SORT_ASCEND = 0x4
CLERK_RANGE_SORT_DESCEND = 0x8
CLERK_RANGE_NO_COUNT = 0x10
CLERK_PUT_PREV_KV = 0x1
CLERK_PUT_IGNORE_VALUE = 0x2
CLERK_DELETE_PREV_KV = 0x1

CLERK_CMP_EQUAL = 0
CLERK_CMP_GREATER = 1
CLERK_CMP_LESS = 2
CLERK_CMP_NOT_EQUAL = 3
CLERK_TXN_THEN = 0
CLERK_TXN_ELSE = 1
CLERK_OP_RANGE = 0
CLERK_OP_PUT = 1
CLERK_OP_DELETE = 2
CLERK_OP_TXN = 3
CLERK_EVENT_PUT = 0
CLERK_EVENT_DELETE = 1


class clerk_options(Structure):
    _fields_ = [
        ("deadline_ms", c_uint),
        ("attempt_ms", c_uint),
        ("read_mode", c_int),
        ("user", c_char_p),
        ("password", c_char_p),
        ("cacert", c_char_p),
        ("cert", c_char_p),
        ("key", c_char_p),
    ]


class clerk_node_status(Structure):
    _fields_ = [
        ("address", c_char * 300),
        ("reachable", c_bool),
        ("other_cluster", c_bool),
        ("id", c_uint64),
        ("role", c_char * 16),
        ("term", c_uint64),
        ("leader", c_uint64),
        ("commit_index", c_uint64),
        ("applied_index", c_uint64),
        ("last_log_index", c_uint64),
        ("snapshot_index", c_uint64),
        ("disk_full", c_bool),
        ("error", c_char * 200),
        ("lag_known", c_bool),
        ("applied_lag", c_uint64),
        ("progress_known", c_bool),
        ("match_index", c_uint64),
        ("replication_lag", c_uint64),
        ("ack_age_ms", c_uint64),
    ]


class clerk_member(Structure):
    _fields_ = [
        ("id", c_uint64),
        ("learner", c_bool),
        ("peer_address", c_char * 300),
        ("address", c_char * 300),
    ]


class clerk_members(Structure):
    _fields_ = [
        ("members", POINTER(clerk_member)),
        ("n", c_size_t),
        ("committed", c_bool),
        ("leader_id", c_uint64),
        ("cluster_id", c_uint64),
        ("removed", POINTER(c_uint64)),
        ("n_removed", c_size_t),
    ]


class clerk_kv(Structure):
    _fields_ = [
        ("key", c_void_p),
        ("key_len", c_size_t),
        ("value", c_void_p),
        ("value_len", c_size_t),
        ("create_revision", c_uint64),
        ("mod_revision", c_uint64),
        ("version", c_uint64),
        ("lease", c_uint64),
    ]


class clerk_range_result(Structure):
    _fields_ = [
        ("revision", c_uint64),
        ("kvs", POINTER(clerk_kv)),
        ("n_kvs", c_size_t),
        ("more", c_bool),
        ("count", c_uint64),
    ]


class clerk_put_result(Structure):
    _fields_ = [
        ("revision", c_uint64),
        ("prev_kv", POINTER(clerk_kv)),
    ]


class clerk_delete_result(Structure):
    _fields_ = [
        ("revision", c_uint64),
        ("deleted", c_uint64),
        ("prev_kvs", POINTER(clerk_kv)),
        ("n_prev_kvs", c_size_t),
        ("more", c_bool),
    ]


class clerk_txn_result(Structure):
    pass


class clerk_txn_response(Structure):
    _fields_ = [
        ("type", c_int),
        ("range", POINTER(clerk_range_result)),
        ("put", POINTER(clerk_put_result)),
        ("del_", POINTER(clerk_delete_result)),
        ("txn", POINTER(clerk_txn_result)),
    ]


clerk_txn_result._fields_ = [
    ("revision", c_uint64),
    ("succeeded", c_bool),
    ("responses", POINTER(clerk_txn_response)),
    ("n_responses", c_size_t),
]


class clerk_event(Structure):
    _fields_ = [
        ("type", c_int),
        ("kv", clerk_kv),
    ]


class clerk_prev_kv(Structure):
    _fields_ = [
        ("known", c_bool),
        ("missing", c_bool),
        ("kv", clerk_kv),
    ]


class clerk_events_result(Structure):
    _fields_ = [
        ("revision", c_uint64),
        ("compact_revision", c_uint64),
        ("events", POINTER(clerk_event)),
        ("n_events", c_size_t),
        ("more", c_bool),
        ("next_revision", c_uint64),
        ("prev_kvs", POINTER(clerk_prev_kv)),
    ]


class clerk_watch_options(Structure):
    _fields_ = [
        ("start_revision", c_uint64),
        ("no_put", c_bool),
        ("no_delete", c_bool),
        ("require_leader", c_bool),
        ("progress_ms", c_uint),
        ("prev_kv", c_bool),
    ]


class clerk_lease_ttl_result(Structure):
    _fields_ = [
        ("id", c_uint64),
        ("ttl", c_int64),
        ("granted_ttl", c_int64),
        ("revision", c_uint64),
        ("keys", POINTER(clerk_kv)),
        ("n_keys", c_size_t),
    ]


# Every struct bound here, by its C name (for the layout test).
STRUCTS = {
    "clerk_options": clerk_options,
    "clerk_node_status": clerk_node_status,
    "clerk_member": clerk_member,
    "clerk_members": clerk_members,
    "clerk_kv": clerk_kv,
    "clerk_range_result": clerk_range_result,
    "clerk_put_result": clerk_put_result,
    "clerk_delete_result": clerk_delete_result,
    "clerk_txn_response": clerk_txn_response,
    "clerk_txn_result": clerk_txn_result,
    "clerk_event": clerk_event,
    "clerk_prev_kv": clerk_prev_kv,
    "clerk_events_result": clerk_events_result,
    "clerk_watch_options": clerk_watch_options,
    "clerk_lease_ttl_result": clerk_lease_ttl_result,
}

# Callbacks. Their Python objects must outlive every call the C side makes.
WATCH_CB = ctypes.CFUNCTYPE(None, c_void_p, POINTER(clerk_events_result),
                            c_int, c_void_p)
LEASE_LOST_CB = ctypes.CFUNCTYPE(None, c_uint64, c_int, c_void_p)

_P = c_void_p  # opaque handles: struct clerk, clerk_txn, clerk_watch, ...
_B = c_char_p  # byte strings passed in: copied by libclerk
_Z = c_size_t

# name: (restype, argtypes)
PROTOTYPES = {
    "clerk_open": (c_int, [POINTER(c_void_p), c_char_p,
                           POINTER(clerk_options)]),
    "clerk_open_error": (c_char_p, []),
    "clerk_close": (None, [_P]),
    "clerk_get": (c_int, [_P, _B, _Z, POINTER(c_void_p), POINTER(c_size_t)]),
    "clerk_put": (c_int, [_P, _B, _Z, _B, _Z]),
    "clerk_append": (c_int, [_P, _B, _Z, _B, _Z]),
    "clerk_delete": (c_int, [_P, _B, _Z]),
    "clerk_cas": (c_int, [_P, _B, _Z, _B, _Z, _B, _Z, POINTER(c_void_p),
                          POINTER(c_size_t)]),
    "clerk_status": (c_int, [_P, POINTER(POINTER(clerk_node_status)),
                             POINTER(c_size_t)]),
    "clerk_transfer_leader": (c_int, [_P, c_uint64, POINTER(c_uint64)]),
    "clerk_member_list": (c_int, [_P, POINTER(POINTER(clerk_members))]),
    "clerk_members_free": (None, [POINTER(clerk_members)]),
    "clerk_range": (c_int, [_P, _B, _Z, _B, _Z, c_uint64, c_uint,
                            POINTER(POINTER(clerk_range_result))]),
    "clerk_range_result_free": (None, [POINTER(clerk_range_result)]),
    "clerk_get_ex": (c_int, [_P, _B, _Z, POINTER(POINTER(clerk_kv)),
                             POINTER(c_uint64)]),
    "clerk_kv_free": (None, [POINTER(clerk_kv)]),
    "clerk_put_ex": (c_int, [_P, _B, _Z, _B, _Z, c_uint,
                             POINTER(POINTER(clerk_put_result))]),
    "clerk_put_lease": (c_int, [_P, _B, _Z, _B, _Z, c_uint64, c_uint,
                                POINTER(POINTER(clerk_put_result))]),
    "clerk_put_result_free": (None, [POINTER(clerk_put_result)]),
    "clerk_delete_range": (c_int, [_P, _B, _Z, _B, _Z, c_uint,
                                   POINTER(POINTER(clerk_delete_result))]),
    "clerk_delete_range_limit": (c_int, [_P, _B, _Z, _B, _Z, c_uint64,
                                         c_uint,
                                         POINTER(POINTER(clerk_delete_result))]),
    "clerk_delete_result_free": (None, [POINTER(clerk_delete_result)]),
    "clerk_txn_new": (c_void_p, []),
    "clerk_txn_free": (None, [_P]),
    "clerk_txn_compare_value": (c_int, [_P, _B, _Z, c_int, _B, _Z]),
    "clerk_txn_compare_version": (c_int, [_P, _B, _Z, c_int, c_uint64]),
    "clerk_txn_compare_create": (c_int, [_P, _B, _Z, c_int, c_uint64]),
    "clerk_txn_compare_mod": (c_int, [_P, _B, _Z, c_int, c_uint64]),
    "clerk_txn_compare_lease": (c_int, [_P, _B, _Z, c_int, c_uint64]),
    "clerk_txn_compare_range_end": (c_int, [_P, _B, _Z]),
    "clerk_txn_put": (c_int, [_P, c_int, _B, _Z, _B, _Z, c_uint]),
    "clerk_txn_put_lease": (c_int, [_P, c_int, _B, _Z, _B, _Z, c_uint64,
                                    c_uint]),
    "clerk_txn_delete": (c_int, [_P, c_int, _B, _Z, _B, _Z, c_uint]),
    "clerk_txn_range": (c_int, [_P, c_int, _B, _Z, _B, _Z, c_uint64,
                                c_uint]),
    "clerk_txn_txn": (c_int, [_P, c_int, _P]),
    "clerk_txn_commit": (c_int, [_P, _P, POINTER(POINTER(clerk_txn_result))]),
    "clerk_txn_result_free": (None, [POINTER(clerk_txn_result)]),
    "clerk_compact": (c_int, [_P, c_uint64, POINTER(c_uint64)]),
    "clerk_events": (c_int, [_P, c_uint64, _B, _Z, _B, _Z, c_uint64,
                             POINTER(POINTER(clerk_events_result))]),
    "clerk_events_result_free": (None, [POINTER(clerk_events_result)]),
    "clerk_watch_open": (c_int, [_P, _B, _Z, _B, _Z,
                                 POINTER(clerk_watch_options),
                                 POINTER(c_void_p)]),
    "clerk_watch_next": (c_int, [_P, c_uint,
                                 POINTER(POINTER(clerk_events_result))]),
    "clerk_watch_start": (c_int, [_P, _B, _Z, _B, _Z,
                                  POINTER(clerk_watch_options), WATCH_CB,
                                  c_void_p, POINTER(c_void_p)]),
    "clerk_watch_revision": (c_uint64, [_P]),
    "clerk_watch_errmsg": (c_char_p, [_P]),
    "clerk_watch_close": (None, [_P]),
    "clerk_lease_grant": (c_int, [_P, c_int64, c_uint64, POINTER(c_uint64),
                                  POINTER(c_int64)]),
    "clerk_lease_revoke": (c_int, [_P, c_uint64, POINTER(c_uint64),
                                   POINTER(c_uint64)]),
    "clerk_lease_keepalive_once": (c_int, [_P, c_uint64, POINTER(c_int64)]),
    "clerk_lease_timetolive": (c_int, [_P, c_uint64, c_bool,
                                       POINTER(POINTER(
                                           clerk_lease_ttl_result))]),
    "clerk_lease_ttl_result_free": (None, [POINTER(clerk_lease_ttl_result)]),
    "clerk_lease_list": (c_int, [_P, POINTER(POINTER(c_uint64)),
                                 POINTER(c_size_t)]),
    "clerk_lease_keepalive_start": (c_int, [_P, c_uint64, LEASE_LOST_CB,
                                            c_void_p, POINTER(c_void_p)]),
    "clerk_lease_keepalive_stop": (None, [_P]),
    "clerk_lock": (c_int, [_P, _B, _Z, c_uint64, c_uint, POINTER(c_void_p)]),
    "clerk_lock_token": (c_uint64, [_P]),
    "clerk_lock_key": (c_void_p, [_P, POINTER(c_size_t)]),
    "clerk_txn_guard": (c_int, [_P, _P]),
    "clerk_lock_held": (c_int, [_P, _P]),
    "clerk_unlock": (c_int, [_P, _P]),
    "clerk_campaign": (c_int, [_P, _B, _Z, c_uint64, _B, _Z, c_uint,
                               POINTER(c_void_p)]),
    "clerk_proclaim": (c_int, [_P, _P, _B, _Z]),
    "clerk_resign": (c_int, [_P, _P]),
    "clerk_election_leader": (c_int, [_P, _B, _Z,
                                      POINTER(POINTER(clerk_kv))]),
    "clerk_set_deadline": (None, [_P, c_uint]),
    "clerk_set_read_mode": (None, [_P, c_int]),
    "clerk_errmsg": (c_char_p, [_P]),
    "clerk_error_code": (c_char_p, [c_int]),
    "clerk_strerror": (c_char_p, [c_int]),
    "clerk_free": (None, [c_void_p]),
    "clerk_prefix_end": (c_size_t, [_B, _Z, c_void_p]),
}

def _candidates():
    env = os.environ.get("RAFTKV_LIBCLERK")
    if env:
        return [env]
    found = []
    name = ctypes.util.find_library("clerk")
    if name:
        found.append(name)
    found.append("libclerk.so.0")
    return found


def load():
    """Load libclerk and declare its prototypes.

    RAFTKV_LIBCLERK names the file when set (a build tree's
    build/clerk/libclerk.so.0, say); otherwise the installed one
    (ctypes.util.find_library("clerk"), then libclerk.so.0).
    """
    errors = []
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            errors.append(str(e))
    else:
        raise ImportError(
            "raftkv: cannot load libclerk (%s); install it (the "
            "libclerk0 package, or cmake --install) or set "
            "RAFTKV_LIBCLERK=/path/to/libclerk.so.0" % "; ".join(errors))
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


lib = load()
