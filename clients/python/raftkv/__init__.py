"""raftkv: a Python client of raftkv, the replicated key-value store.

A binding of libclerk (the C client library) through ctypes: the same
leader discovery, retries with one request id (each write applied exactly
once), deadlines and unknown outcomes as libclerk; no second protocol
implementation. See clients/python/README.md.

    import raftkv
    with raftkv.Client("127.0.0.1:7001,127.0.0.2:7001,127.0.0.3:7001") as c:
        c.put("greeting", "hello")
        print(c.get("greeting"))          # b'hello'

libclerk is loaded from $RAFTKV_LIBCLERK when set, else the installed
libclerk.so.0.
"""

from .client import (CallbackWatch, Client, Election, KeepAlive, Lock, TLS,
                     Txn, Watch, prefix_end)
from .errors import (BadRequest, CasMismatch, Closed, Compacted, Disabled,
                     Error, FutureRevision, Internal, InvalidArgument,
                     LeaseNotFound, NoMemory, NoSpace, NotFound, NotHeld,
                     PermissionDenied, SessionExpired, Timeout, TooManyKeys,
                     Unauthenticated, Unavailable, UnknownOutcome,
                     ValueTooLarge)
from .types import (DeleteResult, Event, Events, KeyValue, Lease,
                    LeaseRevoked, LeaseTTL, Member, Members, NodeStatus,
                    PutResult, RangeResult, TxnResult)

__version__ = "0.1.0"

__all__ = [
    "Client", "TLS", "Txn", "Watch", "CallbackWatch", "KeepAlive", "Lock",
    "Election", "prefix_end",
    "Error", "NotFound", "CasMismatch", "UnknownOutcome", "Unavailable",
    "Timeout", "BadRequest", "ValueTooLarge", "NoSpace", "InvalidArgument",
    "NoMemory", "Internal", "Disabled", "SessionExpired", "Unauthenticated",
    "PermissionDenied", "Compacted", "FutureRevision", "LeaseNotFound",
    "NotHeld", "Closed", "TooManyKeys",
    "KeyValue", "RangeResult", "PutResult", "DeleteResult", "TxnResult",
    "Event", "Events", "Lease", "LeaseRevoked", "LeaseTTL", "NodeStatus",
    "Member", "Members",
]
