"""test_failover: the leader is killed (kill -9) in the middle of a
workload: every acknowledged write is there afterwards, a watch opened
before sees every one of them once and in order, and the killed node
catches up once it is back; and leadership is handed over on request."""

import threading
import time
import unittest

import support  # noqa: F401  (sys.path, RAFTKV_LIBCLERK)
import cluster

import raftkv


class TestFailover(unittest.TestCase):
    def setUp(self):
        self.cl = cluster.Cluster(3).start()
        self.failed = True
        try:
            self.cl.wait_ready(raftkv.Client)
        except BaseException:
            self.cl.close(failed=True)
            raise

    def tearDown(self):
        self.cl.close(failed=self.failed)

    def test_leader_killed_mid_workload(self):
        n_writes, kill_after = 200, 60
        acked, unknown = {}, set()
        killed = threading.Event()
        c = raftkv.Client(self.cl.endpoints, deadline_ms=10000)
        self.addCleanup(c.close)
        watch = c.watch("fo/", prefix=True)
        self.addCleanup(watch.close)
        leader = self.cl.leader_index(c)
        self.assertIsNotNone(leader)

        def killer():
            while len(acked) < kill_after:
                time.sleep(0.005)
            self.cl.kill_node(leader)
            killed.set()

        t = threading.Thread(target=killer)
        t.start()
        writes_after_kill = 0
        for i in range(n_writes):
            key = "fo/%04d" % i
            try:
                rev = c.put(key, "v%d" % i).revision
                acked[key] = (rev, b"v%d" % i)
                if killed.is_set():
                    writes_after_kill += 1
            except raftkv.UnknownOutcome:
                unknown.add(key)  # may or may not be there
        t.join()
        self.assertTrue(killed.is_set())
        self.assertGreater(writes_after_kill, 0)
        self.assertGreaterEqual(len(acked), n_writes - len(unknown))
        new_leader = self.cl.leader_index(c)
        self.assertIsNotNone(new_leader)
        self.assertNotEqual(new_leader, leader)

        # Every acknowledged write is there, with the revision it got.
        r = c.range("fo/", prefix=True)
        have = {kv.key.decode(): kv for kv in r}
        for key, (rev, value) in acked.items():
            self.assertIn(key, have)
            self.assertEqual(have[key].mod_revision, rev)
            self.assertEqual(have[key].value, value)
        self.assertTrue(set(have) <= set(acked) | unknown)

        # The watch saw each of them once, in revision order, across the
        # kill (its server may have been the one killed).
        last = max(kv.mod_revision for kv in r)
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                not seen or seen[-1].kv.mod_revision < last):
            b = watch.get(timeout=1)
            if b is not None:
                seen.extend(b.events)
        revs = [e.kv.mod_revision for e in seen]
        self.assertEqual(revs, sorted(set(revs)))
        self.assertEqual({e.kv.key.decode() for e in seen}, set(have))

        # The killed node comes back and catches up.
        self.cl.start_node(leader)
        with raftkv.Client(self.cl.endpoint(leader), stale=True,
                           deadline_ms=1000) as back:
            def caught_up():
                try:
                    return back.get_kv(max(acked)).mod_revision == \
                        acked[max(acked)][0]
                except raftkv.Error:
                    return False
            deadline = time.monotonic() + 30
            while not caught_up() and time.monotonic() < deadline:
                time.sleep(0.2)
            self.assertTrue(caught_up())
        self.failed = False

    def test_transfer_leader(self):
        with raftkv.Client(self.cl.endpoints) as c:
            old = c.leader()
            self.assertNotEqual(old, 0)
            target = 1 if old != 1 else 2
            self.assertEqual(c.transfer_leader(target), target)
            deadline = time.monotonic() + 10
            while c.leader() != target and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertEqual(c.leader(), target)
            c.put("after-transfer", "v")
            self.assertNotEqual(c.transfer_leader(), target)  # any follower
            with self.assertRaises(raftkv.BadRequest):
                c.transfer_leader(99)  # no such node
        self.failed = False


if __name__ == "__main__":
    unittest.main()
