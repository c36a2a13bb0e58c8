"""test_client: every call of the raftkv package against a real 3-node
cluster: key-value, ranges, transactions, history, watches, leases, locks,
elections, status, and the exception each error maps to."""

import os
import threading
import time
import unittest

import support  # noqa: F401  (sys.path, RAFTKV_LIBCLERK)
import cluster

import raftkv
from raftkv import _lib

CLUSTER = None


def setUpModule():
    global CLUSTER
    CLUSTER = cluster.Cluster(3).start()
    try:
        CLUSTER.wait_ready(raftkv.Client)
    except BaseException:
        CLUSTER.close(failed=True)
        CLUSTER = None
        raise


def tearDownModule():
    if CLUSTER is not None:
        CLUSTER.close()


def wait_for(pred, timeout=20.0, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Base(unittest.TestCase):
    def setUp(self):
        self.c = raftkv.Client(CLUSTER.endpoints)
        self.p = self.id().rsplit(".", 1)[-1] + "/"  # a key prefix per test

    def tearDown(self):
        self.c.close()

    def k(self, name):
        return (self.p + name).encode()


class TestKeyValue(Base):
    def test_put_get_bytes_and_str(self):
        self.c.put(self.k("a"), b"\x00bin\xff")
        self.assertEqual(self.c.get(self.k("a")), b"\x00bin\xff")
        self.c.put(self.p + "s", "h\u00e9llo")  # str in: UTF-8
        self.assertEqual(self.c.get(self.p + "s"), "h\u00e9llo".encode())
        self.c.put(self.k("empty"), b"")
        self.assertEqual(self.c.get(self.k("empty")), b"")
        with self.assertRaises(TypeError):
            self.c.put(self.k("x"), 42)

    def test_get_missing_raises_not_found(self):
        with self.assertRaises(raftkv.NotFound) as cm:
            self.c.get(self.k("missing"))
        e = cm.exception
        self.assertIsInstance(e, raftkv.Error)
        self.assertIsInstance(e, KeyError)
        self.assertEqual(e.code, "NOT_FOUND")
        self.assertEqual(e.number, _lib.CLERK_NOT_FOUND)
        self.assertTrue(e.message)
        with self.assertRaises(raftkv.NotFound):
            self.c.get_kv(self.k("missing"))

    def test_delete(self):
        self.c.put(self.k("d"), "v")
        self.c.delete(self.k("d"))
        with self.assertRaises(raftkv.NotFound):
            self.c.get(self.k("d"))
        with self.assertRaises(raftkv.NotFound):
            self.c.delete(self.k("d"))

    def test_cas(self):
        key = self.k("cas")
        self.c.cas(key, None, "one")  # must not exist: created
        with self.assertRaises(raftkv.CasMismatch) as cm:
            self.c.cas(key, None, "two")
        self.assertEqual(cm.exception.current, b"one")
        self.assertEqual(cm.exception.code, "CAS_MISMATCH")
        with self.assertRaises(raftkv.CasMismatch) as cm:
            self.c.cas(key, "nope", "two")
        self.assertEqual(cm.exception.current, b"one")
        self.c.cas(key, "one", "two")
        self.assertEqual(self.c.get(key), b"two")
        with self.assertRaises(raftkv.CasMismatch) as cm:
            self.c.cas(self.k("absent"), "x", "y")
        self.assertIsNone(cm.exception.current)
        self.c.put(self.k("e"), b"")
        self.c.cas(self.k("e"), b"", b"filled")  # empty, not absent
        self.assertEqual(self.c.get(self.k("e")), b"filled")

    def test_append(self):
        self.c.append(self.k("log"), "a")
        self.c.append(self.k("log"), "bc")
        self.assertEqual(self.c.get(self.k("log")), b"abc")

    def test_put_result_and_revisions(self):
        r1 = self.c.put(self.k("r"), "1")
        r2 = self.c.put(self.k("r"), "2", prev_kv=True)
        self.assertGreater(r2.revision, r1.revision)
        self.assertIsNone(r1.prev_kv)
        self.assertEqual(r2.prev_kv.value, b"1")
        kv = self.c.get_kv(self.k("r"))
        self.assertEqual((kv.key, kv.value), (self.k("r"), b"2"))
        self.assertEqual(kv.create_revision, r1.revision)
        self.assertEqual(kv.mod_revision, r2.revision)
        self.assertEqual(kv.version, 2)
        self.assertEqual(kv.lease, 0)
        r3 = self.c.put(self.k("r"), "", ignore_value=True)
        self.assertEqual(self.c.get(self.k("r")), b"2")
        self.assertEqual(self.c.get_kv(self.k("r")).mod_revision, r3.revision)

    def test_errors_map_to_classes(self):
        with self.assertRaises(raftkv.ValueTooLarge) as cm:
            self.c.put(b"k" * 512, "v")
        self.assertEqual(cm.exception.code, "VALUE_TOO_LARGE")
        # clerk.h says BAD_REQUEST; the server answers NOT_FOUND, as
        # docs/data-model.md says.
        with self.assertRaises(raftkv.NotFound):
            self.c.put(self.k("nokey"), "", ignore_value=True)
        with self.assertRaises(raftkv.BadRequest) as cm:
            self.c.lease_grant(0)  # a bad TTL
        self.assertEqual(cm.exception.code, "BAD_REQUEST")
        with self.assertRaises(raftkv.LeaseNotFound):
            self.c.put(self.k("l"), "v", lease=0x1234567)
        with self.assertRaises(raftkv.FutureRevision):
            self.c.events(start_revision=1 << 40)
        # Every clerk_error number maps to its class and libclerk's name.
        for number, name in enumerate(_lib.ERRORS[1:], start=1):
            e = raftkv.errors.from_errno(number)
            self.assertEqual(e.number, number)
            self.assertEqual(type(e).number, number, name)
            self.assertEqual(
                e.code, _lib.lib.clerk_error_code(number).decode())
        self.assertIs(type(raftkv.errors.from_errno(999)), raftkv.Error)

    def test_threads_share_a_client(self):
        errors = []

        def work(t):
            try:
                for i in range(20):
                    self.c.put(self.k("t%d/%d" % (t, i)), str(i))
            except Exception as e:  # pragma: no cover
                errors.append(e)

        ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(self.c.range(self.k(""), prefix=True,
                                      count_only=True).count, 80)


class TestClient(unittest.TestCase):
    def test_context_manager_and_close(self):
        with raftkv.Client(CLUSTER.endpoints.split(",")) as c:
            c.put("cm", "v")
            self.assertFalse(c.closed)
        self.assertTrue(c.closed)
        with self.assertRaises(raftkv.InvalidArgument):
            c.get("cm")
        c.close()  # twice is fine

    def test_bad_server_list(self):
        with self.assertRaises(raftkv.InvalidArgument) as cm:
            raftkv.Client("")
        self.assertIn("empty", cm.exception.message)
        with self.assertRaises(ValueError):  # InvalidArgument is one
            raftkv.Client("no-port-here")

    def test_unreachable_cluster(self):
        # A port nobody listens on: the deadline passes.
        ports, locks = cluster._reserve_ports(1)
        self.addCleanup(lambda: [os.close(fd) for fd in locks])
        port = ports[0]
        with raftkv.Client("127.0.0.1:%d" % port, deadline_ms=300) as c:
            self.assertEqual(c.deadline_ms, 300)
            t0 = time.monotonic()
            with self.assertRaises((raftkv.Unavailable, raftkv.Timeout)) as cm:
                c.get("k")
            self.assertLess(time.monotonic() - t0, 5)
            self.assertIn(str(port), cm.exception.message)
            with self.assertRaises(raftkv.Unavailable):
                c.put("k", "v")  # not applied: Unavailable, not unknown
            c.deadline_ms = 200
            self.assertEqual(c.deadline_ms, 200)

    def test_stale_reads(self):
        with raftkv.Client(CLUSTER.endpoints) as c:
            c.put("stale", "v")
        with raftkv.Client(CLUSTER.endpoints, stale=True) as c:
            self.assertTrue(wait_for(lambda: self._has(c, "stale")))
            c.set_stale_reads(False)
            self.assertEqual(c.get("stale"), b"v")
        with raftkv.Client(CLUSTER.endpoints, stale="hedged") as c:
            for _ in range(40):  # enough for the hedge's p95
                self.assertTrue(wait_for(lambda: self._has(c, "stale")))
        with self.assertRaises(ValueError):
            raftkv.Client(CLUSTER.endpoints, stale="sometimes")

    @staticmethod
    def _has(c, k):
        try:
            return c.get(k) == b"v"
        except raftkv.NotFound:
            return False

    def test_status_members_leader(self):
        with raftkv.Client(CLUSTER.endpoints) as c:
            st = c.status()
            self.assertEqual(len(st), 3)
            self.assertTrue(all(s.reachable for s in st))
            leaders = [s for s in st if s.role == "leader"]
            self.assertEqual(len(leaders), 1)
            self.assertEqual(c.leader(), leaders[0].id)
            self.assertEqual(sorted(s.id for s in st), [1, 2, 3])
            self.assertEqual(st[0].address, CLUSTER.endpoint(0))
            m = c.members()
            self.assertEqual(sorted(x.id for x in m.members), [1, 2, 3])
            self.assertEqual(m.leader_id, leaders[0].id)
            self.assertTrue(m.committed)
            self.assertNotEqual(m.cluster_id, 0)
            self.assertEqual(m.removed, [])


class TestRange(Base):
    def setUp(self):
        super().setUp()
        for i in range(5):
            self.c.put(self.k("r%d" % i), "v%d" % i)

    def test_range_forms(self):
        r = self.c.range(self.k("r"), prefix=True)
        self.assertEqual([kv.key for kv in r], [self.k("r%d" % i)
                                                for i in range(5)])
        self.assertEqual([kv.value for kv in r],
                         [b"v%d" % i for i in range(5)])
        self.assertEqual((r.count, r.more, len(r)), (5, False, 5))
        self.assertGreater(r.revision, 0)
        self.assertTrue(all(kv.version == 1 for kv in r))
        r = self.c.range(self.k("r1"), end=self.k("r3"))
        self.assertEqual([kv.key for kv in r], [self.k("r1"), self.k("r2")])
        r = self.c.range(self.k("r"), prefix=True, limit=2)
        self.assertEqual((len(r), r.more, r.count), (2, True, 5))
        # no_count: the keys answered are counted, the rest is not walked.
        r = self.c.range(self.k("r"), prefix=True, limit=2, no_count=True)
        self.assertEqual((len(r), r.more, r.count), (2, True, 2))
        r = self.c.range(self.k("r"), prefix=True, no_count=True)
        self.assertEqual((len(r), r.more, r.count), (5, False, 5))
        t = self.c.txn().then_range(self.k("r"), prefix=True, limit=3,
                                    no_count=True).commit()
        self.assertEqual((len(t.responses[0]), t.responses[0].more,
                          t.responses[0].count), (3, True, 3))
        r = self.c.range(self.k("r"), prefix=True, descending=True, limit=1)
        self.assertEqual(r.kvs[0].key, self.k("r4"))
        r = self.c.range(self.k("r"), prefix=True, keys_only=True)
        self.assertEqual([kv.value for kv in r], [b""] * 5)
        r = self.c.range(self.k("r"), prefix=True, count_only=True)
        self.assertEqual((len(r), r.count), (0, 5))
        r = self.c.range(self.k("r3"), from_key=True)
        self.assertIn(self.k("r4"), [kv.key for kv in r])
        # An empty key: from the first key (alone: every key).
        everything = self.c.range("", count_only=True).count
        self.assertGreaterEqual(everything, 5)
        self.assertEqual(self.c.range("", from_key=True,
                                      count_only=True).count, everything)
        self.assertEqual(self.c.range(b"", prefix=True,
                                      count_only=True).count, everything)
        self.assertEqual(self.c.range("", end=self.k("r"),
                                      count_only=True).count,
                         self.c.range("\0", end=self.k("r"),
                                      count_only=True).count)
        r = self.c.range(self.k("r0"))  # the key alone
        self.assertEqual([kv.key for kv in r], [self.k("r0")])
        self.assertEqual(len(self.c.range(self.k("zzz"))), 0)
        with self.assertRaises(ValueError):
            self.c.range("a", end="b", prefix=True)

    def test_delete_range(self):
        d = self.c.delete_range(self.k("r1"), end=self.k("r3"), prev_kv=True)
        self.assertEqual(d.deleted, 2)
        self.assertEqual([kv.value for kv in d.prev_kvs], [b"v1", b"v2"])
        d = self.c.delete_range(self.k("r"), prefix=True)
        self.assertEqual((d.deleted, d.prev_kvs), (3, []))
        d = self.c.delete_range(self.k("r"), prefix=True)
        self.assertEqual(d.deleted, 0)

    def test_delete_range_in_pieces(self):
        for i in range(5):
            self.c.put(self.k("p%d" % i), "v")
        d = self.c.delete_range(self.k("p"), prefix=True, limit=2)
        self.assertEqual((d.deleted, d.more), (2, True))
        self.assertEqual([kv.key for kv in self.c.range(self.k("p"),
                                                         prefix=True)],
                         [self.k("p2"), self.k("p3"), self.k("p4")])
        self.assertEqual(self.c.delete_range_all(self.k("p"), prefix=True,
                                                 piece=2), 3)
        self.assertEqual(len(self.c.range(self.k("p"), prefix=True)), 0)
        self.assertTrue(issubclass(raftkv.TooManyKeys, raftkv.Error))


class TestTxn(Base):
    def test_then_and_else(self):
        lock = self.k("lock")
        r = (self.c.txn().if_version(lock, "==", 0)
             .then_put(lock, "me").then_range(lock)
             .else_range(lock).commit())
        self.assertTrue(r.succeeded)
        self.assertEqual(len(r.responses), 2)
        self.assertIsInstance(r.responses[0], raftkv.PutResult)
        self.assertIsInstance(r.responses[1], raftkv.RangeResult)
        self.assertEqual(r.responses[1].kvs[0].value, b"me")
        self.assertEqual(r.responses[0].revision, r.revision)
        r = (self.c.txn().if_version(lock, "==", 0)
             .then_put(lock, "other").else_range(lock).commit())
        self.assertFalse(r.succeeded)
        self.assertEqual(r.responses[0].kvs[0].value, b"me")

    def test_compares(self):
        a = self.k("a")
        put = self.c.put(a, "5")
        kv = self.c.get_kv(a)
        ok = (self.c.txn().if_value(a, "==", "5").if_value(a, "!=", "6")
              .if_value(a, ">", "4").if_value(a, "<", "6")
              .if_mod(a, "==", put.revision)
              .if_create(a, "==", kv.create_revision)
              .if_version(a, ">", 0).if_lease(a, "==", 0))
        self.assertTrue(ok.commit().succeeded)
        self.assertFalse(self.c.txn().if_value(a, "==", "4").commit()
                         .succeeded)
        # A compare over a prefix holds for every key in it.
        self.c.put(self.k("p/1"), "x")
        self.c.put(self.k("p/2"), "x")
        t = self.c.txn().if_value(self.k("p/"), "==", "x", prefix=True)
        self.assertTrue(t.commit().succeeded)
        self.c.put(self.k("p/3"), "y")
        self.assertFalse(t.commit().succeeded)  # a builder runs again
        with self.assertRaises(ValueError):
            self.c.txn().if_value(a, "~", "5")

    def test_delete_nested_and_lease(self):
        self.c.put(self.k("d1"), "1")
        self.c.put(self.k("d2"), "2")
        inner = raftkv.Txn().if_version(self.k("n"), "==", 0) \
            .then_put(self.k("n"), "nested")
        r = (self.c.txn().then_delete(self.k("d"), prefix=True, prev_kv=True)
             .then_txn(inner).commit())
        self.assertTrue(r.succeeded)
        self.assertIsInstance(r.responses[0], raftkv.DeleteResult)
        self.assertEqual(r.responses[0].deleted, 2)
        self.assertEqual(len(r.responses[0].prev_kvs), 2)
        self.assertIsInstance(r.responses[1], raftkv.TxnResult)
        self.assertTrue(r.responses[1].succeeded)
        self.assertEqual(self.c.get(self.k("n")), b"nested")
        lease = self.c.lease_grant(30)
        r = self.c.txn().then_put(self.k("leased"), "v", lease=lease).commit()
        self.assertEqual(self.c.get_kv(self.k("leased")).lease, lease.id)
        self.assertTrue(self.c.txn().if_lease(self.k("leased"), "==", lease)
                        .commit().succeeded)
        self.c.lease_revoke(lease)
        with self.assertRaises(raftkv.LeaseNotFound):
            self.c.txn().then_put(self.k("x"), "v", lease=lease).commit()
        # A client given at commit time.
        self.assertTrue(raftkv.Txn().commit(self.c).succeeded)
        with self.assertRaises(ValueError):
            raftkv.Txn().commit()

    def test_too_many_ops(self):
        t = self.c.txn()
        for i in range(_lib_max_ops() + 1):
            t.then_put(self.k("m%d" % i), "v")
        with self.assertRaises(raftkv.BadRequest):
            t.commit()


def _lib_max_ops():
    return 128  # CLERK_TXN_MAX_OPS


class TestHistory(Base):
    def test_events_and_compact(self):
        r1 = self.c.put(self.k("h"), "1").revision
        self.c.put(self.k("h"), "2")
        self.c.delete(self.k("h"))
        ev = self.c.events(start_revision=r1, key=self.k("h"))
        self.assertEqual([e.type for e in ev], ["put", "put", "delete"])
        self.assertEqual([e.kv.value for e in ev][:2], [b"1", b"2"])
        revs = [e.kv.mod_revision for e in ev]
        self.assertEqual(revs, sorted(revs))
        self.assertGreater(ev.next_revision, revs[-1])
        ev = self.c.events(start_revision=r1, key=self.k(""), prefix=True,
                           limit=1)
        self.assertEqual((len(ev), ev.more), (1, True))
        self.assertGreaterEqual(self.c.compact(r1), r1)
        with self.assertRaises(raftkv.Compacted):
            self.c.events(start_revision=r1, key=self.k("h"))
        with self.assertRaises(raftkv.Compacted):
            self.c.compact(r1)


class TestWatch(Base):
    def test_watch_sees_events_in_order(self):
        w = self.c.watch(self.k(""), prefix=True, prev_kv=True)
        with w:
            start = w.revision
            revs = [self.c.put(self.k("a"), "1").revision,
                    self.c.put(self.k("b"), "2").revision,
                    self.c.put(self.k("a"), "3").revision]
            self.c.delete(self.k("b"))
            got = []
            for e in w:
                got.append(e)
                if len(got) == 4:
                    break
            self.assertEqual([(e.type, e.kv.key) for e in got],
                             [("put", self.k("a")), ("put", self.k("b")),
                              ("put", self.k("a")), ("delete", self.k("b"))])
            self.assertEqual([e.kv.mod_revision for e in got[:3]], revs)
            self.assertGreater(got[0].kv.mod_revision, start)
            self.assertIsNone(got[0].prev_kv)
            self.assertEqual(got[2].prev_kv.value, b"1")
            self.assertEqual(got[3].prev_kv.value, b"2")
            self.assertGreaterEqual(w.revision, got[3].kv.mod_revision)
            more = w.get(timeout=0.2)  # nothing more (or a progress notice)
            self.assertTrue(more is None or len(more) == 0, more)
        self.assertIsNone(w.get())  # closed
        w.close()

    def test_watch_from_revision_and_filters(self):
        r = self.c.put(self.k("x"), "1").revision
        self.c.delete(self.k("x"))
        with self.c.watch(self.k("x"), start_revision=r, no_delete=True) as w:
            b = w.get(timeout=5)
            self.assertEqual([e.kv.value for e in b], [b"1"])

    def test_watch_close_from_other_thread(self):
        w = self.c.watch(self.k("idle"))
        threading.Timer(0.3, w.close).start()
        t0 = time.monotonic()
        self.assertEqual(list(w), [])
        self.assertLess(time.monotonic() - t0, 5)

    def test_watch_compacted(self):
        r = self.c.put(self.k("c"), "1").revision
        self.c.put(self.k("c"), "2")
        self.c.compact(r)
        with self.assertRaises(raftkv.Compacted):
            self.c.watch(self.k("c"), start_revision=r)

    def test_callback_watch(self):
        got, done = [], threading.Event()

        def cb(batch, err):
            if batch is not None:
                got.extend(batch.events)
                if len(got) >= 3:
                    w.close()  # from the callback: allowed
                    done.set()

        w = self.c.watch(self.k(""), prefix=True, callback=cb)
        for i in range(3):
            self.c.put(self.k("cb%d" % i), str(i))
        self.assertTrue(done.wait(10))
        self.assertEqual([e.kv.key for e in got[:3]],
                         [self.k("cb%d" % i) for i in range(3)])
        w.close()

    def test_client_close_closes_watches(self):
        c = raftkv.Client(CLUSTER.endpoints)
        w = c.watch(self.k("w"))
        c.close()
        self.assertIsNone(w.get(timeout=0.1))


class TestLeases(Base):
    def test_grant_list_ttl_revoke(self):
        lease = self.c.lease_grant(60)
        self.assertGreater(lease.id, 0)
        self.assertEqual(lease.ttl, 60)
        self.assertIn(lease.id, self.c.leases())
        self.c.put(self.k("a"), "1", lease=lease)
        self.c.put(self.k("b"), "2", lease=lease.id)
        self.assertEqual(self.c.get_kv(self.k("a")).lease, lease.id)
        ttl = self.c.lease_time_to_live(lease, keys=True)
        self.assertEqual(ttl.id, lease.id)
        self.assertEqual(ttl.granted_ttl, 60)
        self.assertTrue(0 < ttl.ttl <= 60)
        self.assertEqual(ttl.keys, [self.k("a"), self.k("b")])
        self.assertEqual(self.c.lease_time_to_live(lease).keys, [])
        self.assertEqual(self.c.lease_keep_alive_once(lease), 60)
        rv = self.c.lease_revoke(lease)
        self.assertEqual(rv.deleted, 2)
        with self.assertRaises(raftkv.NotFound):
            self.c.get(self.k("a"))
        self.assertNotIn(lease.id, self.c.leases())
        with self.assertRaises(raftkv.LeaseNotFound) as cm:
            self.c.lease_revoke(lease)
        self.assertEqual(cm.exception.code, "LEASE_NOT_FOUND")
        with self.assertRaises(raftkv.LeaseNotFound):
            self.c.lease_time_to_live(lease)
        with self.assertRaises(raftkv.LeaseNotFound):
            self.c.lease_keep_alive_once(lease)
        own = self.c.lease_grant(30, id=0x7777aaaa)
        self.assertEqual(own.id, 0x7777aaaa)
        with self.assertRaises(raftkv.BadRequest):
            self.c.lease_grant(30, id=0x7777aaaa)
        self.c.lease_revoke(own)

    def test_expiry_deletes_keys(self):
        lease = self.c.lease_grant(2)
        self.c.put(self.k("ephemeral"), "v", lease=lease)
        t0 = time.monotonic()

        def gone():
            try:
                self.c.get(self.k("ephemeral"))
                return False
            except raftkv.NotFound:
                return True

        self.assertTrue(wait_for(gone, timeout=20))
        self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        with self.assertRaises(raftkv.LeaseNotFound):
            self.c.lease_time_to_live(lease)

    def test_background_keep_alive_and_lost(self):
        lease = self.c.lease_grant(2)
        self.c.put(self.k("kept"), "v", lease=lease)
        lost = []
        with self.c.lease_keep_alive(lease, on_lost=lambda i, e:
                                     lost.append((i, e))) as ka:
            time.sleep(4.5)  # past two TTLs
            self.assertEqual(self.c.get(self.k("kept")), b"v")
            self.assertFalse(ka.lost.is_set())
            # Another client revokes it: the keep-alive is told.
            with raftkv.Client(CLUSTER.endpoints) as other:
                other.lease_revoke(lease)
            self.assertTrue(ka.lost.wait(15))
            self.assertIsInstance(ka.reason, raftkv.LeaseNotFound)
            self.assertEqual(lost[0][0], lease.id)
            self.assertIsInstance(lost[0][1], raftkv.LeaseNotFound)
        ka.stop()  # twice is fine
        with self.assertRaises(raftkv.LeaseNotFound):
            self.c.lease_keep_alive(lease)

    def test_keep_alive_stop_from_callback_refused(self):
        lease = self.c.lease_grant(30)
        errors = []

        def on_lost(i, e):
            try:
                ka.stop()
            except RuntimeError as x:
                errors.append(x)

        ka = self.c.lease_keep_alive(lease, on_lost=on_lost)
        self.c.lease_revoke(lease)
        self.assertTrue(ka.lost.wait(15))
        self.assertTrue(wait_for(lambda: errors, timeout=5))
        ka.stop()


class TestLock(Base):
    def test_lock_exclusive_and_fenced_tokens(self):
        name = self.k("job")
        with self.c.lock(name, ttl=10) as l1:
            self.assertGreater(l1.token, 0)
            self.assertTrue(l1.key.startswith(name + b"/"))
            self.assertTrue(l1.held())
            rev = l1.put(self.k("state"), "one")
            self.assertEqual(self.c.get_kv(self.k("state")).mod_revision, rev)
            with raftkv.Client(CLUSTER.endpoints) as other:
                with self.assertRaises(raftkv.Timeout):
                    other.lock(name, ttl=10, timeout=0.5)
            token1 = l1.token
        self.assertFalse(l1.held())
        with self.assertRaises(raftkv.NotHeld):
            l1.put(self.k("state"), "late")  # released: refused at once
        with raftkv.Client(CLUSTER.endpoints) as other:
            with other.lock(name, ttl=10, timeout=5) as l2:
                self.assertGreater(l2.token, token1)
                l2.put(self.k("state"), "two")
                self.assertEqual(l2.delete(self.k("state")), 1)

    def test_guarded_write_refused_after_lease_revoked(self):
        name = self.k("fence")
        lock = self.c.lock(name, ttl=10)
        try:
            lock.put(self.k("data"), "holder-1")
            with raftkv.Client(CLUSTER.endpoints) as other:
                other.lease_revoke(lock.lease)  # the holder's lease ends
                with other.lock(name, ttl=10, timeout=5) as l2:
                    self.assertGreater(l2.token, lock.token)
                    l2.put(self.k("data"), "holder-2")
                    # The old holder still has its Lock object: refused.
                    with self.assertRaises(raftkv.NotHeld):
                        lock.put(self.k("data"), "holder-1 late")
                    r = lock.txn().then_put(self.k("data"), "x").commit()
                    self.assertFalse(r.succeeded)
                    self.assertFalse(lock.held())
                    self.assertTrue(lock.lost.wait(15))
            self.assertEqual(self.c.get(self.k("data")), b"holder-2")
        finally:
            lock.release()

    def test_lock_with_callers_lease(self):
        lease = self.c.lease_grant(30)
        with self.c.lock(self.k("mine"), lease=lease) as l:
            self.assertEqual(l.lease, lease.id)
        # The caller's lease stays.
        self.assertIn(lease.id, self.c.leases())
        self.c.lease_revoke(lease)
        with self.assertRaises(raftkv.LeaseNotFound):
            self.c.lock(self.k("mine"), lease=lease, timeout=1)

    def test_client_close_releases_locks(self):
        c = raftkv.Client(CLUSTER.endpoints)
        l = c.lock(self.k("closing"), ttl=30)
        lease = l.lease
        c.close()
        self.assertNotIn(lease, self.c.leases())
        self.assertEqual(len(self.c.range(self.k("closing/"), prefix=True)),
                         0)


class TestElection(Base):
    def test_campaign_proclaim_resign(self):
        name = self.k("el")
        with self.assertRaises(raftkv.NotFound):
            self.c.election_leader(name)
        with self.c.campaign(name, "node-a", ttl=10) as e:
            kv = self.c.election_leader(name)
            self.assertEqual(kv.value, b"node-a")
            self.assertEqual(kv.key, e.key)
            e.proclaim("node-a v2")
            self.assertEqual(self.c.election_leader(name).value,
                             b"node-a v2")
            with raftkv.Client(CLUSTER.endpoints) as other:
                with self.assertRaises(raftkv.Timeout):
                    other.campaign(name, "node-b", timeout=0.5)
            e.resign()
            with self.assertRaises(raftkv.NotHeld):
                e.proclaim("gone")
        with self.assertRaises(raftkv.NotFound):
            self.c.election_leader(name)


if __name__ == "__main__":
    unittest.main()
