"""client: raftkv.Client and what it hands out (Txn, Watch, KeepAlive, Lock,
Election), each a thin layer over one libclerk object."""

import ctypes
import sys
import threading
import traceback
import weakref
from ctypes import POINTER, byref, c_int64, c_size_t, c_uint64, c_void_p

from . import _lib
from ._lib import lib
from .errors import (CasMismatch, Error, InvalidArgument, NotHeld,
                     LeaseNotFound, from_errno)
from .types import (DeleteResult, Event, Events, KeyValue, Lease,
                    LeaseRevoked, LeaseTTL, Member, Members, NodeStatus,
                    PutResult, RangeResult, TxnResult)

__all__ = ["Client", "TLS", "Txn", "Watch", "CallbackWatch", "KeepAlive",
           "Lock", "Election"]


# ------------------------------------------------------------ conversions

def _b(x, what="key"):
    """bytes of a key or value: bytes as they are, str UTF-8 encoded."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode("utf-8")
    if isinstance(x, (bytearray, memoryview)):
        return bytes(x)
    raise TypeError("%s must be bytes or str, not %s" % (what, type(x).__name__))


def _opt_b(x, what="value"):
    return None if x is None else _b(x, what)


def _len(b):
    return 0 if b is None else len(b)


def prefix_end(prefix):
    """The range end that covers every key starting with prefix (etcd's):
    the prefix with its last byte below 0xff incremented and the rest cut,
    or b"\\0" when every byte is 0xff (clerk_prefix_end)."""
    p = _b(prefix)
    out = ctypes.create_string_buffer(max(len(p), 1))
    n = lib.clerk_prefix_end(p, len(p), out)
    return out.raw[:n]


def _range_end(key, end, prefix, from_key):
    """The range_end for (key, end, prefix, from_key): at most one of them."""
    if sum((end is not None, bool(prefix), bool(from_key))) > 1:
        raise ValueError("give at most one of end, prefix, from_key")
    if prefix:
        return prefix_end(key)
    if from_key:
        return b"\0"
    return _opt_b(end, "end")


def _key_range(key, end, prefix, from_key):
    """(key, range_end) in libclerk's form. An empty key (a key is 1 to 511
    bytes) means from the first key: b"\0"; alone (or as a prefix) it
    means every key."""
    k = _b(key)
    e = _range_end(k, end, prefix, from_key)
    if not k:
        k = b"\0"
        if e is None:
            e = b"\0"
    return k, e


def _range_flags(keys_only, count_only, descending, no_count):
    return ((_lib.CLERK_RANGE_KEYS_ONLY if keys_only else 0) |
            (_lib.CLERK_RANGE_COUNT_ONLY if count_only else 0) |
            (_lib.CLERK_RANGE_SORT_DESCEND if descending else 0) |
            (_lib.CLERK_RANGE_NO_COUNT if no_count else 0))


def _bytes_at(ptr, n):
    if not ptr or not n:
        return b""
    return ctypes.string_at(ptr, n)


def _kv(k):
    return KeyValue(key=_bytes_at(k.key, k.key_len),
                    value=_bytes_at(k.value, k.value_len),
                    create_revision=k.create_revision,
                    mod_revision=k.mod_revision, version=k.version,
                    lease=k.lease)


def _kvs(ptr, n):
    return [_kv(ptr[i]) for i in range(n)] if ptr else []


def _range_result(r):
    return RangeResult(kvs=_kvs(r.kvs, r.n_kvs), revision=r.revision,
                       more=bool(r.more), count=r.count)


def _put_result(r):
    prev = _kv(r.prev_kv.contents) if r.prev_kv else None
    return PutResult(revision=r.revision, prev_kv=prev)


def _delete_result(r):
    return DeleteResult(revision=r.revision, deleted=r.deleted,
                        prev_kvs=_kvs(r.prev_kvs, r.n_prev_kvs),
                        more=bool(r.more))


def _txn_result(r):
    out = []
    for i in range(r.n_responses):
        resp = r.responses[i]
        if resp.type == _lib.CLERK_OP_RANGE:
            out.append(_range_result(resp.range.contents))
        elif resp.type == _lib.CLERK_OP_PUT:
            out.append(_put_result(resp.put.contents))
        elif resp.type == _lib.CLERK_OP_DELETE:
            out.append(_delete_result(resp.del_.contents))
        else:
            out.append(_txn_result(resp.txn.contents))
    return TxnResult(succeeded=bool(r.succeeded), revision=r.revision,
                     responses=out)


def _events(r):
    evs = []
    for i in range(r.n_events):
        e = r.events[i]
        prev, compacted = None, False
        if r.prev_kvs:
            p = r.prev_kvs[i]
            if p.known:
                prev = _kv(p.kv)
            compacted = bool(p.missing)
        evs.append(Event(type="put" if e.type == _lib.CLERK_EVENT_PUT
                         else "delete", kv=_kv(e.kv), prev_kv=prev,
                         prev_kv_compacted=compacted))
    return Events(events=evs, revision=r.revision,
                  compact_revision=r.compact_revision, more=bool(r.more),
                  next_revision=r.next_revision)


def _str(field):
    return field.decode("utf-8", errors="replace")


class TLS:
    """TLS settings of a Client: trust servers whose certificate the PEM CA
    file cacert signed (and that name the address dialled); cert and key
    show a client certificate to servers that require one."""

    def __init__(self, cacert, cert=None, key=None):
        self.cacert, self.cert, self.key = cacert, cert, key


_CMP = {"==": _lib.CLERK_CMP_EQUAL, "=": _lib.CLERK_CMP_EQUAL,
        ">": _lib.CLERK_CMP_GREATER, "<": _lib.CLERK_CMP_LESS,
        "!=": _lib.CLERK_CMP_NOT_EQUAL}


def _cmp(op):
    try:
        return _CMP[op]
    except KeyError:
        raise ValueError("compare with one of ==, !=, >, <, not %r" % (op,))


# ------------------------------------------------------------------ client

def _read_mode(stale):
    """libclerk's read mode for stale=False, True or "hedged"."""
    if stale == "hedged":
        return _lib.CLERK_READ_STALE_HEDGED
    if stale is True or stale is False or stale is None:
        return _lib.CLERK_READ_STALE if stale else _lib.CLERK_READ_LINEARIZABLE
    raise ValueError('stale is False, True or "hedged", not %r' % (stale,))


class Client:
    """A client of a raftkv cluster: one libclerk handle (struct clerk).

        with raftkv.Client("127.0.0.1:7001,127.0.0.2:7001") as c:
            c.put("k", "v")
            c.get("k")            # b"v"

    servers: "HOST:PORT,HOST:PORT" or a list of "HOST:PORT".
    user, password: authenticate as this user (auth enabled).
    tls: a raftkv.TLS, or the path of a CA file (cacert).
    deadline_ms: the deadline of every call, retries included (default
        5000); attempt_ms: of one try at one server (default 1000).
    stale: serve reads from any server's applied state (not linearizable).

    Keys and values are bytes; a str is UTF-8 encoded. Every call raises a
    raftkv.Error subclass when libclerk answers anything but CLERK_OK.

    Threads: a Client may be shared by threads; its calls run one at a
    time (libclerk's handle has a mutex, and the Client holds a lock over
    each call so that an exception carries that call's clerk_errmsg). For
    calls in parallel, open a Client per thread. A Watch is used by one
    thread at a time (close() may come from another: it takes effect
    within half a second). KeepAlive and CallbackWatch callbacks run on
    libclerk's own threads: they may use this client, but a KeepAlive's
    on_lost must not stop that KeepAlive. A blocking call holds the
    calling thread (Ctrl-C included) for at most its deadline.

    close() (or leaving the with block, or garbage collection) releases
    the locks, closes the watches and stops the keep-alives made from this
    client, then closes the handle. CPython ignores SIGPIPE already, as
    libclerk asks of its programs.
    """

    _h = None

    def __init__(self, servers, user=None, password=None, tls=None,
                 deadline_ms=None, attempt_ms=None, stale=False):
        if not isinstance(servers, (str, bytes)):
            servers = ",".join(servers)
        if isinstance(tls, str):
            tls = TLS(tls)
        opts = _lib.clerk_options()
        opts.deadline_ms = deadline_ms or 0
        opts.attempt_ms = attempt_ms or 0
        opts.read_mode = _read_mode(stale)
        opts.user = _opt_b(user, "user")
        opts.password = _opt_b(password, "password")
        if tls is not None:
            opts.cacert = _opt_b(tls.cacert, "cacert")
            opts.cert = _opt_b(tls.cert, "cert")
            opts.key = _opt_b(tls.key, "key")
        h = c_void_p()
        rc = lib.clerk_open(byref(h), _b(servers, "servers"), byref(opts))
        if rc != _lib.CLERK_OK:
            msg = lib.clerk_open_error()
            raise from_errno(rc, msg.decode(errors="replace") if msg else None)
        self._mu = threading.RLock()
        self._children = weakref.WeakSet()
        self._deadline_ms = deadline_ms or 5000
        self._h = h.value

    # The handle, under self._mu.
    def _handle(self):
        if self._h is None:
            raise InvalidArgument("the client is closed")
        return self._h

    def _raise(self, rc):
        msg = lib.clerk_errmsg(self._h)
        raise from_errno(rc, msg.decode(errors="replace") if msg else None)

    def _call(self, fn, *args):
        """Run one libclerk call on the handle; raise on anything but OK."""
        with self._mu:
            rc = fn(self._handle(), *args)
            if rc != _lib.CLERK_OK:
                self._raise(rc)

    # ------------------------------------------------------------ lifetime

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        """Release this client's locks, close its watches, stop its
        keep-alives, and close the handle. Safe to call twice."""
        if self._h is None:
            return
        for child in list(self._children):
            try:
                child._close_for_client()
            except Error:
                pass  # a lock whose key could not be deleted: its lease
                # ends it (the lock itself is freed)
        with self._mu:
            h, self._h = self._h, None
        if h is not None:
            lib.clerk_close(h)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self):
        return self._h is None

    @property
    def deadline_ms(self):
        """The deadline of the calls that follow (settable; 0: 5000)."""
        return self._deadline_ms

    @deadline_ms.setter
    def deadline_ms(self, ms):
        with self._mu:
            lib.clerk_set_deadline(self._handle(), int(ms))
            self._deadline_ms = int(ms) or 5000

    def set_stale_reads(self, stale):
        """Serve the reads that follow from any server (True), from any
        server with a backup request to a second one once the first is
        slower than the p95 of recent reads ("hedged"), or from the
        leader after it confirms it leads (False, the default)."""
        mode = _read_mode(stale)
        with self._mu:
            lib.clerk_set_read_mode(self._handle(), mode)

    # ---------------------------------------------------------- key-value

    def get(self, key):
        """The value of key (bytes). Raises NotFound when there is none."""
        k = _b(key)
        val, n = c_void_p(), c_size_t()
        self._call(lib.clerk_get, k, len(k), byref(val), byref(n))
        try:
            return _bytes_at(val.value, n.value)
        finally:
            lib.clerk_free(val)

    def get_kv(self, key):
        """key with its revisions, version and lease (a KeyValue). Raises
        NotFound when there is none."""
        k = _b(key)
        out = POINTER(_lib.clerk_kv)()
        self._call(lib.clerk_get_ex, k, len(k), byref(out), None)
        try:
            return _kv(out.contents)
        finally:
            lib.clerk_kv_free(out)

    def put(self, key, value, lease=0, prev_kv=False, ignore_value=False):
        """Set key to value, attached to lease (0: none); a PutResult
        (revision; with prev_kv=True the key before). ignore_value keeps
        the current value (value must be empty; the key must exist)."""
        k, v = _b(key), _b(value, "value")
        flags = ((_lib.CLERK_PUT_PREV_KV if prev_kv else 0) |
                 (_lib.CLERK_PUT_IGNORE_VALUE if ignore_value else 0))
        out = POINTER(_lib.clerk_put_result)()
        lease = _lease_id(lease)
        if lease:
            self._call(lib.clerk_put_lease, k, len(k), v, len(v), lease,
                       flags, byref(out))
        else:
            self._call(lib.clerk_put_ex, k, len(k), v, len(v), flags,
                       byref(out))
        try:
            return _put_result(out.contents)
        finally:
            lib.clerk_put_result_free(out)

    def append(self, key, value):
        """Append value to key's value (an absent key counts as empty)."""
        k, v = _b(key), _b(value, "value")
        self._call(lib.clerk_append, k, len(k), v, len(v))

    def delete(self, key):
        """Delete key. Raises NotFound when there was none."""
        k = _b(key)
        self._call(lib.clerk_delete, k, len(k))

    def delete_range(self, key, end=None, prefix=False, from_key=False,
                     prev_kv=False, limit=0):
        """Delete the keys in [key, end), with prefix key, or from key on,
        at one revision: a DeleteResult (deleted may be 0). Raises
        TooManyKeys, deleting nothing, when that is more keys than the
        leader's --max-delete-keys (10000 by default) allows in one write:
        delete such a range in pieces with limit (at most that many keys,
        the first in key order; the result's more says whether keys are
        left), or with delete_range_all."""
        k, e = _key_range(key, end, prefix, from_key)
        out = POINTER(_lib.clerk_delete_result)()
        self._call(lib.clerk_delete_range_limit, k, len(k), e, _len(e),
                   limit, _lib.CLERK_DELETE_PREV_KV if prev_kv else 0,
                   byref(out))
        try:
            return _delete_result(out.contents)
        finally:
            lib.clerk_delete_result_free(out)

    def delete_range_all(self, key, end=None, prefix=False, from_key=False,
                         piece=1000):
        """Delete every key of a range, however many, in pieces of at most
        piece keys (each piece one write, its own revision: not atomic);
        returns the number deleted."""
        deleted = 0
        while True:
            r = self.delete_range(key, end, prefix=prefix, from_key=from_key,
                                  limit=piece)
            deleted += r.deleted
            if not r.more:
                return deleted

    def cas(self, key, expected, new):
        """Set key to new only if it holds expected (None: only if it does
        not exist). Raises CasMismatch, whose .current is the value found
        (None: no key), when it did not; nothing is written then."""
        k, n = _b(key), _b(new, "value")
        x = _opt_b(expected, "expected")
        cur, cur_len = c_void_p(), c_size_t()
        with self._mu:
            rc = lib.clerk_cas(self._handle(), k, len(k), x, _len(x), n,
                               len(n), byref(cur), byref(cur_len))
            try:
                if rc == _lib.CLERK_CAS_MISMATCH:
                    msg = lib.clerk_errmsg(self._h)
                    e = CasMismatch(msg.decode(errors="replace") if msg
                                    else "the key did not hold the value")
                    e.current = (_bytes_at(cur.value, cur_len.value)
                                 if cur.value else None)
                    raise e
                if rc != _lib.CLERK_OK:
                    self._raise(rc)
            finally:
                lib.clerk_free(cur)

    def range(self, key, end=None, prefix=False, from_key=False, limit=0,
              keys_only=False, count_only=False, descending=False,
              no_count=False):
        """The keys in [key, end) (end None: key alone), with prefix key
        (prefix=True), or from key on (from_key=True): a RangeResult of
        KeyValues in key order (descending=True: reversed), at most limit
        (0: all that fit in 4 MiB; see .more). .count is the number of keys
        in the whole range, which the server walks to count; no_count=True
        spares it that walk over a range cut short (about 0.5 s per million
        keys left, which its other requests wait behind): .count is then
        the number of keys answered."""
        k, e = _key_range(key, end, prefix, from_key)
        flags = _range_flags(keys_only, count_only, descending, no_count)
        out = POINTER(_lib.clerk_range_result)()
        self._call(lib.clerk_range, k, len(k), e, _len(e), limit, flags,
                   byref(out))
        try:
            return _range_result(out.contents)
        finally:
            lib.clerk_range_result_free(out)

    def txn(self):
        """A new transaction builder (raftkv.Txn) bound to this client."""
        return Txn(self)

    # ------------------------------------------------------------ history

    def compact(self, revision):
        """Drop the history up to and including revision; returns where the
        history now starts after. Raises Compacted, FutureRevision."""
        out = c_uint64()
        self._call(lib.clerk_compact, revision, byref(out))
        return out.value

    def events(self, start_revision=0, key=None, end=None, prefix=False,
               from_key=False, limit=0):
        """The changes at revisions >= start_revision to the keys given (key
        None: every key), oldest first: an Events (poll again from its
        next_revision). Raises Compacted when start_revision is no longer
        kept."""
        k, e = None, None
        if key is not None:
            k, e = _key_range(key, end, prefix, from_key)
        out = POINTER(_lib.clerk_events_result)()
        with self._mu:
            rc = lib.clerk_events(self._handle(), start_revision, k, _len(k),
                                  e, _len(e), limit, byref(out))
            try:
                if rc != _lib.CLERK_OK:
                    self._raise(rc)
                return _events(out.contents)
            finally:
                lib.clerk_events_result_free(out)

    def watch(self, key, end=None, prefix=False, from_key=False,
              start_revision=0, no_put=False, no_delete=False,
              prev_kv=False, progress_ms=0, require_leader=False,
              callback=None):
        """Watch the changes to key (or [key, end), a prefix, from key on),
        from start_revision (0: from now), in revision order, without a gap
        or a duplicate across server failures.

        Without callback: a Watch, an iterator of Events (see Watch).
        With callback: a CallbackWatch that calls callback(events, error)
        on a thread of libclerk's for each batch, then once with
        (None, error) when the watch ends (see CallbackWatch).
        """
        k, e = _key_range(key, end, prefix, from_key)
        o = _lib.clerk_watch_options(start_revision=start_revision,
                                     no_put=no_put, no_delete=no_delete,
                                     require_leader=require_leader,
                                     progress_ms=progress_ms,
                                     prev_kv=prev_kv)
        if callback is None:
            return Watch(self, k, e, o)
        return CallbackWatch(self, k, e, o, callback)

    # ------------------------------------------------------------- leases

    def lease_grant(self, ttl, id=0):
        """Grant a lease of ttl seconds (id 0: the leader picks one): a
        Lease (id, granted ttl)."""
        out_id, out_ttl = c_uint64(), c_int64()
        self._call(lib.clerk_lease_grant, int(ttl), id, byref(out_id),
                   byref(out_ttl))
        return Lease(id=out_id.value, ttl=out_ttl.value)

    def lease_revoke(self, id):
        """Revoke a lease, deleting its keys at one revision: a
        LeaseRevoked. Raises LeaseNotFound when it is gone already."""
        rev, deleted = c_uint64(), c_uint64()
        self._call(lib.clerk_lease_revoke, _lease_id(id), byref(rev),
                   byref(deleted))
        return LeaseRevoked(revision=rev.value, deleted=deleted.value)

    def lease_keep_alive_once(self, id):
        """Renew a lease once; returns its TTL. Count it lost a TTL after
        this call started, not after it returned."""
        ttl = c_int64()
        self._call(lib.clerk_lease_keepalive_once, _lease_id(id), byref(ttl))
        return ttl.value

    def lease_keep_alive(self, id, on_lost=None):
        """Keep a lease alive from a thread of libclerk's (a KeepAlive):
        renewed at once (raising what the first renewal met), then every
        third of its TTL. When the lease is lost, KeepAlive.lost is set,
        .reason holds the error (LeaseNotFound: expired or revoked; else
        why no renewal succeeded for a TTL), and on_lost(id, error) runs on
        that thread. Stop it with .stop() (or a with block)."""
        return KeepAlive(self, _lease_id(id), on_lost)

    def lease_time_to_live(self, id, keys=False):
        """How long a lease has left (a LeaseTTL), with its keys when
        keys=True. Raises LeaseNotFound."""
        out = POINTER(_lib.clerk_lease_ttl_result)()
        self._call(lib.clerk_lease_timetolive, _lease_id(id), bool(keys),
                   byref(out))
        try:
            r = out.contents
            return LeaseTTL(id=r.id, ttl=r.ttl, granted_ttl=r.granted_ttl,
                            revision=r.revision,
                            keys=[kv.key for kv in _kvs(r.keys, r.n_keys)])
        finally:
            lib.clerk_lease_ttl_result_free(out)

    def leases(self):
        """Every lease's id, ascending."""
        ids, n = POINTER(c_uint64)(), c_size_t()
        self._call(lib.clerk_lease_list, byref(ids), byref(n))
        try:
            return [ids[i] for i in range(n.value)]
        finally:
            lib.clerk_free(ids)

    # ------------------------------------------------------------ recipes

    def lock(self, name, ttl=10, timeout=30.0, lease=None):
        """Take the lock name (a Lock, a context manager), waiting at most
        timeout seconds (raises Timeout). Without lease, the Lock grants
        its own of ttl seconds, keeps it alive in the background and
        revokes it on release; with lease (an id or a Lease), the caller
        keeps that lease alive. Writes the lock protects go through
        Lock.put / Lock.delete / Lock.txn(), which the cluster refuses
        (NotHeld) once the lock is lost."""
        return Lock(self, name, ttl, timeout, lease)

    def campaign(self, name, value, ttl=10, timeout=30.0, lease=None):
        """Campaign to lead the election name with value (what observers
        see): returns an Election (a context manager) once this candidate
        leads, or raises Timeout after timeout seconds. Leases as lock()."""
        return Election(self, name, ttl, timeout, lease, value)

    def election_leader(self, name):
        """Who leads the election name: its KeyValue (value: what it last
        proclaimed). Raises NotFound when nobody leads."""
        n = _b(name, "name")
        out = POINTER(_lib.clerk_kv)()
        self._call(lib.clerk_election_leader, n, len(n), byref(out))
        try:
            return _kv(out.contents)
        finally:
            lib.clerk_kv_free(out)

    # -------------------------------------------------------------- admin

    def status(self):
        """Every server's status (a list of NodeStatus): those given to
        the Client, then leaders found that were not."""
        nodes, n = POINTER(_lib.clerk_node_status)(), c_size_t()
        self._call(lib.clerk_status, byref(nodes), byref(n))
        try:
            out = []
            for i in range(n.value):
                s = nodes[i]
                out.append(NodeStatus(
                    address=_str(s.address), reachable=bool(s.reachable),
                    id=s.id, role=_str(s.role), term=s.term,
                    leader=s.leader, commit_index=s.commit_index,
                    applied_index=s.applied_index,
                    last_log_index=s.last_log_index,
                    snapshot_index=s.snapshot_index,
                    disk_full=bool(s.disk_full), error=_str(s.error),
                    applied_lag=s.applied_lag if s.lag_known else None,
                    match_index=s.match_index if s.progress_known else None,
                    replication_lag=(s.replication_lag if s.progress_known
                                     else None),
                    ack_age_ms=s.ack_age_ms if s.progress_known else None,
                    other_cluster=bool(s.other_cluster)))
            return out
        finally:
            lib.clerk_free(nodes)

    def leader(self):
        """The id of the leader the servers know (0: none answered)."""
        best = None
        for s in self.status():
            if s.reachable and s.role == "leader":
                if best is None or s.term > best.term:
                    best = s
        return best.id if best else 0

    def transfer_leader(self, target=0):
        """Hand leadership to node target (0: the leader picks); returns
        the new leader's id."""
        out = c_uint64()
        self._call(lib.clerk_transfer_leader, target, byref(out))
        return out.value

    def members(self):
        """The cluster's membership as its leader knows it (Members)."""
        out = POINTER(_lib.clerk_members)()
        self._call(lib.clerk_member_list, byref(out))
        try:
            m = out.contents
            return Members(
                members=[Member(id=x.id, learner=bool(x.learner),
                                peer_address=_str(x.peer_address),
                                address=_str(x.address))
                         for x in (m.members[i] for i in range(m.n))],
                committed=bool(m.committed), leader_id=m.leader_id,
                cluster_id=m.cluster_id,
                removed=[m.removed[i] for i in range(m.n_removed)])
        finally:
            lib.clerk_members_free(out)


def _lease_id(lease):
    return lease.id if isinstance(lease, Lease) else int(lease)


# --------------------------------------------------------------- txn

class Txn:
    """A transaction: compares, then the THEN ops if every compare holds,
    else the ELSE ops, all at one revision, applied exactly once.

        r = (c.txn()
             .if_version("lock", "==", 0)
             .then_put("lock", "me")
             .else_range("lock")
             .commit())
        r.succeeded, r.responses

    Compare ops are "==", "!=", ">", "<"; each if_* takes end/prefix to
    compare every key of a range. The builder is plain Python until
    commit(), which may run it again; a Txn given to then_txn/else_txn is
    nested (at most 128 ops in all, 8 deep).
    """

    def __init__(self, client=None):
        self._client = client
        self._cmps = []
        self._ops = ([], [])  # THEN, ELSE

    # compares
    def _compare(self, fn, key, op, value, end, prefix):
        k, e = _key_range(key, end, prefix, False)
        self._cmps.append((fn, k, _cmp(op), value, e))
        return self

    def if_value(self, key, op, value, end=None, prefix=False):
        """key's value op value (false for a key that does not exist)."""
        return self._compare("value", key, op, _b(value, "value"), end,
                             prefix)

    def if_version(self, key, op, version, end=None, prefix=False):
        """key's version op version (0: the key does not exist)."""
        return self._compare("version", key, op, int(version), end, prefix)

    def if_create(self, key, op, revision, end=None, prefix=False):
        """key's create revision op revision (0: it does not exist)."""
        return self._compare("create", key, op, int(revision), end, prefix)

    def if_mod(self, key, op, revision, end=None, prefix=False):
        """key's mod revision op revision (0: it does not exist)."""
        return self._compare("mod", key, op, int(revision), end, prefix)

    def if_lease(self, key, op, lease, end=None, prefix=False):
        """the lease key is attached to op lease (0: none, or no key)."""
        return self._compare("lease", key, op, _lease_id(lease), end, prefix)

    def guard(self, lock):
        """Only while lock (a Lock or Election) is held."""
        self._cmps.append(("guard", lock, None, None, None))
        return self

    # ops
    def _put(self, br, key, value, lease, prev_kv, ignore_value):
        flags = ((_lib.CLERK_PUT_PREV_KV if prev_kv else 0) |
                 (_lib.CLERK_PUT_IGNORE_VALUE if ignore_value else 0))
        self._ops[br].append(("put", _b(key), _b(value, "value"),
                              _lease_id(lease), flags))
        return self

    def _delete(self, br, key, end, prefix, from_key, prev_kv):
        k, e = _key_range(key, end, prefix, from_key)
        self._ops[br].append(("delete", k, e,
                              _lib.CLERK_DELETE_PREV_KV if prev_kv else 0))
        return self

    def _range(self, br, key, end, prefix, from_key, limit, keys_only,
               count_only, descending, no_count):
        flags = _range_flags(keys_only, count_only, descending, no_count)
        k, e = _key_range(key, end, prefix, from_key)
        self._ops[br].append(("range", k, e, int(limit), flags))
        return self

    def _txn(self, br, txn):
        if not isinstance(txn, Txn) or txn is self:
            raise ValueError("nest another raftkv.Txn")
        self._ops[br].append(("txn", txn))
        return self

    def then_put(self, key, value, lease=0, prev_kv=False,
                 ignore_value=False):
        return self._put(0, key, value, lease, prev_kv, ignore_value)

    def else_put(self, key, value, lease=0, prev_kv=False,
                 ignore_value=False):
        return self._put(1, key, value, lease, prev_kv, ignore_value)

    def then_delete(self, key, end=None, prefix=False, from_key=False,
                    prev_kv=False):
        return self._delete(0, key, end, prefix, from_key, prev_kv)

    def else_delete(self, key, end=None, prefix=False, from_key=False,
                    prev_kv=False):
        return self._delete(1, key, end, prefix, from_key, prev_kv)

    def then_range(self, key, end=None, prefix=False, from_key=False,
                   limit=0, keys_only=False, count_only=False,
                   descending=False, no_count=False):
        return self._range(0, key, end, prefix, from_key, limit, keys_only,
                           count_only, descending, no_count)

    def else_range(self, key, end=None, prefix=False, from_key=False,
                   limit=0, keys_only=False, count_only=False,
                   descending=False, no_count=False):
        return self._range(1, key, end, prefix, from_key, limit, keys_only,
                           count_only, descending, no_count)

    def then_txn(self, txn):
        return self._txn(0, txn)

    def else_txn(self, txn):
        return self._txn(1, txn)

    # building and running
    def _build(self):
        """A clerk_txn for this builder (the caller frees it)."""
        t = lib.clerk_txn_new()
        if not t:
            raise MemoryError("clerk_txn_new")
        try:
            self._fill(t)
        except BaseException:
            lib.clerk_txn_free(t)
            raise
        return t

    def _fill(self, t):
        def check(rc):
            if rc != _lib.CLERK_OK:
                raise from_errno(rc)

        for fn, key, op, value, end in self._cmps:
            if fn == "guard":
                lock = key
                check(lib.clerk_txn_guard(t, lock._pointer()))
                continue
            if fn == "value":
                check(lib.clerk_txn_compare_value(t, key, len(key), op, value,
                                                  len(value)))
            else:
                f = {"version": lib.clerk_txn_compare_version,
                     "create": lib.clerk_txn_compare_create,
                     "mod": lib.clerk_txn_compare_mod,
                     "lease": lib.clerk_txn_compare_lease}[fn]
                check(f(t, key, len(key), op, value))
            if end is not None:
                check(lib.clerk_txn_compare_range_end(t, end, len(end)))
        for br, ops in enumerate(self._ops):
            for op in ops:
                kind = op[0]
                if kind == "put":
                    _, k, v, lease, flags = op
                    check(lib.clerk_txn_put_lease(t, br, k, len(k), v, len(v),
                                                  lease, flags))
                elif kind == "delete":
                    _, k, e, flags = op
                    check(lib.clerk_txn_delete(t, br, k, len(k), e, _len(e),
                                               flags))
                elif kind == "range":
                    _, k, e, limit, flags = op
                    check(lib.clerk_txn_range(t, br, k, len(k), e, _len(e),
                                              limit, flags))
                else:
                    nested = op[1]._build()
                    rc = lib.clerk_txn_txn(t, br, nested)
                    if rc != _lib.CLERK_OK:
                        lib.clerk_txn_free(nested)
                        check(rc)

    def commit(self, client=None):
        """Run the transaction: a TxnResult (succeeded: the compares held).
        Raises as put (the whole transaction was not applied, or
        UnknownOutcome), LeaseNotFound when a put names a lease that does
        not exist."""
        c = client or self._client
        if c is None:
            raise ValueError("commit(client): this Txn has no client")
        t = self._build()
        out = POINTER(_lib.clerk_txn_result)()
        try:
            c._call(lib.clerk_txn_commit, t, byref(out))
            try:
                return _txn_result(out.contents)
            finally:
                lib.clerk_txn_result_free(out)
        finally:
            lib.clerk_txn_free(t)


# ------------------------------------------------------------- watches

class _Child:
    """Something made from a Client that must end before its handle."""

    def _adopt(self, client):
        self._client = client  # keeps the handle alive while this lives
        client._children.add(self)

    def _close_for_client(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class Watch(_Child):
    """A watch (Client.watch without callback): iterate over it for Events
    one at a time, or call get(timeout) for a batch. Raises Compacted
    (it fell behind the history kept), PermissionDenied, Unauthenticated
    or Internal when the watch ends. One thread at a time; close() from
    another thread ends a blocked iteration within half a second."""

    _w = None
    _POLL_MS = 500

    def __init__(self, client, key, end, opts):
        w = c_void_p()
        client._call(lib.clerk_watch_open, key, len(key), end, _len(end),
                     byref(opts), byref(w))
        self._w = w.value
        self._mu = threading.Lock()
        self._adopt(client)

    @property
    def revision(self):
        """Every change up to this revision has been handed out."""
        with self._mu:
            if self._w is None:
                raise InvalidArgument("the watch is closed")
            return lib.clerk_watch_revision(self._w)

    def get(self, timeout=None):
        """The next batch (an Events, possibly empty: progress), or None
        when nothing came within timeout seconds (None: wait for ever,
        or until close(), which makes it return None)."""
        left = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            wait = self._POLL_MS if left is None else min(left, self._POLL_MS)
            out = POINTER(_lib.clerk_events_result)()
            with self._mu:
                if self._w is None:
                    return None
                rc = lib.clerk_watch_next(self._w, wait, byref(out))
                try:
                    if rc == _lib.CLERK_OK:
                        return _events(out.contents)
                    if rc != _lib.CLERK_TIMEOUT:
                        msg = lib.clerk_watch_errmsg(self._w)
                        raise from_errno(rc, msg.decode(errors="replace")
                                         if msg else None)
                finally:
                    lib.clerk_events_result_free(out)
            if left is not None:
                left -= wait
                if left <= 0:
                    return None

    def __iter__(self):
        while True:
            batch = self.get()
            if batch is None:
                return
            yield from batch.events

    def close(self):
        """Cancel the watch and free it. Safe to call twice."""
        mu = getattr(self, "_mu", None)
        if mu is None:
            return
        with mu:
            w, self._w = self._w, None
        if w is not None:
            lib.clerk_watch_close(w)


class CallbackWatch(_Child):
    """A watch whose batches go to callback(events, None) on a thread of
    libclerk's, in order, one at a time; when the watch ends,
    callback(None, error) runs once. close() may be called from the
    callback. An exception the callback raises is printed and ignored."""

    _w = None

    def __init__(self, client, key, end, opts, callback):
        self._user = callback
        self._mu = threading.Lock()
        # Kept for the watch's whole life, and after: close() may run on
        # the callback's own thread, inside this trampoline.
        self._cb = _lib.WATCH_CB(self._on_batch)
        w = c_void_p()
        client._call(lib.clerk_watch_start, key, len(key), end, _len(end),
                     byref(opts), self._cb, None, byref(w))
        self._w = w.value
        self._adopt(client)

    def _on_batch(self, w, batch, err, arg):
        try:
            if batch:
                self._user(_events(batch.contents), None)
            else:
                msg = lib.clerk_watch_errmsg(w)
                self._user(None, from_errno(err, msg.decode(errors="replace")
                                            if msg else None))
        except BaseException:
            traceback.print_exc(file=sys.stderr)

    def close(self):
        """Stop the watch's thread and free it (also from the callback)."""
        mu = getattr(self, "_mu", None)
        if mu is None:
            return
        with mu:
            w, self._w = self._w, None
        if w is not None:
            lib.clerk_watch_close(w)


# ------------------------------------------------------------ leases

class KeepAlive(_Child):
    """A background keep-alive (Client.lease_keep_alive). lost is a
    threading.Event set when the lease is lost, reason the error then."""

    _k = None

    def __init__(self, client, lease_id, on_lost):
        self.id = lease_id
        self.lost = threading.Event()
        self.reason = None
        self._user = on_lost
        self._mu = threading.Lock()
        self._cb_thread = None
        self._cb = _lib.LEASE_LOST_CB(self._on_lost)
        k = c_void_p()
        client._call(lib.clerk_lease_keepalive_start, lease_id, self._cb,
                     None, byref(k))
        self._k = k.value
        self._adopt(client)

    def _on_lost(self, id, reason, arg):
        self._cb_thread = threading.get_ident()
        try:
            self.reason = from_errno(reason)
            self.lost.set()
            if self._user is not None:
                self._user(id, self.reason)
        except BaseException:
            traceback.print_exc(file=sys.stderr)

    def stop(self):
        """Stop renewing (the lease is not revoked) and free the
        keep-alive. Not from its own on_lost callback."""
        mu = getattr(self, "_mu", None)
        if mu is None:
            return
        if self._cb_thread == threading.get_ident() and self._k is not None:
            raise RuntimeError("KeepAlive.stop() from its own on_lost "
                               "callback would wait for itself")
        with mu:
            k, self._k = self._k, None
        if k is not None:
            lib.clerk_lease_keepalive_stop(k)

    close = stop


# ------------------------------------------------------------ recipes

class Lock(_Child):
    """A lock held (Client.lock). token is its fencing token (the lock
    key's create revision: it grows from one holder to the next), key its
    key, lease its lease id. lost is a threading.Event set when the lock's
    own keep-alive loses the lease (only for a lock that granted its own).

    A holder whose lease ended has lost the lock whether it knows or not,
    so protected writes go through put/delete/txn(), guarded by the
    token: the cluster refuses them (NotHeld) once the lock is lost.
    """

    _l = None

    def __init__(self, client, name, ttl, timeout, lease, value=None):
        self._mu = threading.Lock()
        self._client = client
        self._ka = None
        self._own_lease = False
        self.lease = 0
        self.lost = threading.Event()
        n = _b(name, "name")
        if lease is None:
            lease = client.lease_grant(ttl).id
            self._own_lease = True
            try:
                self._ka = client.lease_keep_alive(
                    lease, lambda i, e: self.lost.set())
            except BaseException:
                self._revoke(client, lease)
                self._own_lease = False
                raise
        self.lease = _lease_id(lease)
        out = c_void_p()
        timeout_ms = max(0, int(timeout * 1000))
        try:
            if value is None:
                client._call(lib.clerk_lock, n, len(n), self.lease,
                             timeout_ms, byref(out))
            else:
                v = _b(value, "value")
                client._call(lib.clerk_campaign, n, len(n), self.lease, v,
                             len(v), timeout_ms, byref(out))
        except BaseException:
            self._end_lease()
            raise
        self._l = out.value
        self.token = lib.clerk_lock_token(self._l)
        klen = c_size_t()
        self.key = ctypes.string_at(lib.clerk_lock_key(self._l, byref(klen)),
                                    klen.value)
        self._adopt(client)

    @staticmethod
    def _revoke(client, lease):
        try:
            client.lease_revoke(lease)
        except (LeaseNotFound, Error):
            pass

    def _end_lease(self):
        if self._ka is not None:
            self._ka.stop()
            self._ka = None
        if self._own_lease:
            self._revoke(self._client, self.lease)
            self._own_lease = False

    def _pointer(self):
        if self._l is None:
            raise NotHeld("the lock was released")
        return self._l

    def held(self):
        """Is the lock still held (a linearizable read)? For a write, use
        put/delete/txn(): the answer may be stale by the time it happens."""
        with self._mu:
            p = self._l
            if p is None:
                return False
            with self._client._mu:
                rc = lib.clerk_lock_held(self._client._handle(), p)
                if rc == _lib.CLERK_NOT_HELD:
                    return False
                if rc != _lib.CLERK_OK:
                    self._client._raise(rc)
                return True

    def txn(self):
        """A Txn guarded by this lock: its THEN branch runs only while the
        lock is held."""
        return self._client.txn().guard(self)

    def put(self, key, value, lease=0):
        """Put, only while the lock is held; raises NotHeld when it is not
        (nothing written). Returns the revision."""
        r = self.txn().then_put(key, value, lease=lease).commit()
        if not r.succeeded:
            raise NotHeld("the lock %r is not held: the put was refused"
                          % self.key)
        return r.revision

    def delete(self, key, end=None, prefix=False):
        """Delete, only while the lock is held (raises NotHeld); returns
        the number of keys deleted."""
        r = self.txn().then_delete(key, end=end, prefix=prefix).commit()
        if not r.succeeded:
            raise NotHeld("the lock %r is not held: the delete was refused"
                          % self.key)
        return r.responses[0].deleted

    def release(self):
        """Release the lock (delete its key) and, when the lock granted
        its lease, stop its keep-alive and revoke it. Safe to call twice;
        also for a lock that is lost already."""
        mu = getattr(self, "_mu", None)
        if mu is None:
            return
        with mu:
            p, self._l = self._l, None
        client = getattr(self, "_client", None)
        if p is not None:
            err = None
            try:
                with client._mu:
                    # Frees the lock even when the delete fails (the key
                    # then goes with the lease).
                    rc = lib.clerk_unlock(client._handle(), p)
                    if rc not in (_lib.CLERK_OK, _lib.CLERK_NOT_FOUND):
                        msg = lib.clerk_errmsg(client._h)
                        err = from_errno(rc, msg.decode(errors="replace")
                                         if msg else None)
            finally:
                self._end_lease()
            if err is not None:
                raise err
        elif getattr(self, "_ka", None) is not None or \
                getattr(self, "_own_lease", False):
            self._end_lease()

    close = release


class Election(Lock):
    """Leadership of an election (Client.campaign): a Lock whose key holds
    a value observers read with Client.election_leader."""

    def __init__(self, client, name, ttl, timeout, lease, value):
        super().__init__(client, name, ttl, timeout, lease, value)

    def proclaim(self, value):
        """Announce a new value, only while leading (raises NotHeld)."""
        v = _b(value, "value")
        with self._mu:
            self._client._call(lib.clerk_proclaim, self._pointer(), v, len(v))

    def resign(self):
        """Stop leading: release()."""
        self.release()
