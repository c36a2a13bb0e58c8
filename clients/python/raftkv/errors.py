"""errors: one exception class per libclerk error (enum clerk_error)."""

from . import _lib


class Error(Exception):
    """A libclerk call failed.

    code: clerk_error_code()'s stable name ("NOT_FOUND", "TIMEOUT", ...;
        note that libclerk names CLERK_UNKNOWN_OUTCOME "TIMEOUT" too: tell
        them apart by class, or by number)
    number: the enum clerk_error number
    message: clerk_errmsg() of the handle (or the watch) right after the
        call, else clerk_strerror()
    """

    number = None

    def __init__(self, message, code=None, number=None):
        super().__init__(message)
        self.message = message
        if number is not None:
            self.number = number
        self.code = code if code is not None else _code(self.number)

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


def _code(err):
    if err is None:
        return None
    return _lib.lib.clerk_error_code(err).decode()


class NotFound(Error, KeyError):
    """get, delete: no such key (CLERK_NOT_FOUND)."""
    number = _lib.CLERK_NOT_FOUND

    __str__ = Error.__str__


class CasMismatch(Error):
    """cas: the key did not hold the expected value; nothing written.
    .current is the value found (None: the key did not exist)."""
    number = _lib.CLERK_CAS_MISMATCH
    current = None


class UnknownOutcome(Error):
    """A write may or may not have been applied: read the key to find out."""
    number = _lib.CLERK_UNKNOWN_OUTCOME


class Unavailable(Error):
    """No leader accepted the operation before the deadline; a write was
    not applied."""
    number = _lib.CLERK_UNAVAILABLE


class Timeout(Error, TimeoutError):
    """A read (or a wait: lock, watch) passed its deadline."""
    number = _lib.CLERK_TIMEOUT

    __str__ = Error.__str__


class BadRequest(Error):
    """The cluster refused the request as malformed."""
    number = _lib.CLERK_BAD_REQUEST


class ValueTooLarge(Error):
    """Key over 511 bytes (503 with a lease) or value over 4 MiB."""
    number = _lib.CLERK_VALUE_TOO_LARGE


class NoSpace(Error):
    """The leader's disk is full or the quota is reached; not applied."""
    number = _lib.CLERK_NO_SPACE


class InvalidArgument(Error, ValueError):
    """A bad argument (bad server list, TLS files that do not load)."""
    number = _lib.CLERK_INVALID

    __str__ = Error.__str__


class NoMemory(Error, MemoryError):
    """libclerk ran out of memory."""
    number = _lib.CLERK_NOMEM

    __str__ = Error.__str__


class Internal(Error):
    """An unexpected answer from the cluster."""
    number = _lib.CLERK_INTERNAL


class Disabled(Error):
    """The server does not allow the operation."""
    number = _lib.CLERK_DISABLED


class SessionExpired(Error):
    """The cluster forgot this client's session while a write was retried:
    an earlier try may have been applied."""
    number = _lib.CLERK_SESSION_EXPIRED


class Unauthenticated(Error):
    """No user, a wrong user or password, or the password changed."""
    number = _lib.CLERK_UNAUTHENTICATED


class PermissionDenied(Error, PermissionError):
    """The user's roles do not allow this; nothing was applied."""
    number = _lib.CLERK_PERMISSION_DENIED

    __str__ = Error.__str__


class Compacted(Error):
    """The history asked for was compacted away."""
    number = _lib.CLERK_COMPACTED


class FutureRevision(Error):
    """The revision asked for is newer than the store's."""
    number = _lib.CLERK_FUTURE_REVISION


class LeaseNotFound(Error):
    """No such lease (never granted, revoked or expired)."""
    number = _lib.CLERK_LEASE_NOT_FOUND


class NotHeld(Error):
    """A lock or a leadership is not held (any more)."""
    number = _lib.CLERK_NOT_HELD


class Closed(Error):
    """The handle was closed before the operation ended; a write may or may
    not have been applied (libclerk's async API)."""
    number = _lib.CLERK_CLOSED


class TooManyKeys(Error):
    """A delete of a range would delete more keys than the leader allows in
    one write (its --max-delete-keys): delete the range in pieces. Or a put
    would give a lease more keys than the leader allows (its
    --max-lease-keys): use another lease. Nothing was applied."""
    number = _lib.CLERK_TOO_MANY_KEYS


BY_ERRNO = {cls.number: cls for cls in (
    NotFound, CasMismatch, UnknownOutcome, Unavailable, Timeout, BadRequest,
    ValueTooLarge, NoSpace, InvalidArgument, NoMemory, Internal, Disabled,
    SessionExpired, Unauthenticated, PermissionDenied, Compacted,
    FutureRevision, LeaseNotFound, NotHeld, Closed, TooManyKeys)}


def from_errno(err, message=None):
    """The exception for a clerk_error number (Error itself for one this
    binding does not know)."""
    if message is None:
        message = _lib.lib.clerk_strerror(err).decode(errors="replace")
    cls = BY_ERRNO.get(err)
    if cls is None:
        return Error(message, code=_code(err), number=err)
    return cls(message)
