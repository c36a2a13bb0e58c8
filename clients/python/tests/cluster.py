"""cluster: a real raftkv cluster of kvserver processes for the tests.

Each node serves clients and peers on free loopback ports, with its data
and log in a temporary directory of its own (/tmp/raftkv-test-py-*), and
a shared peer secret. Only the processes started here are ever signalled;
the directory is removed at the end (kept, with its path printed, when
RAFTKV_KEEP_TEST_DIR=1).

The kvserver binary comes from $RAFTKV_KVSERVER (ctest sets it), else
build/kvserver/kvserver of the repository.
"""

import fcntl
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))


def kvserver_path():
    return os.environ.get("RAFTKV_KVSERVER",
                          os.path.join(REPO, "build", "kvserver", "kvserver"))


def require(condition, why):
    """Skip the test when condition is false, or fail it under
    RAFTKV_REQUIRE_ALL=1 (CI: a skipped test must not hide)."""
    if condition:
        return
    if os.environ.get("RAFTKV_REQUIRE_ALL") == "1":
        raise AssertionError("RAFTKV_REQUIRE_ALL=1 and " + why)
    raise unittest.SkipTest(why)


# Ports are reserved as the C test harness (tests/cluster/harness.c)
# reserves them: from 10000-19999, outside the kernel's ephemeral range
# (where a client connection's source port could take a port between its
# choice and the node's bind), with a lock file per port flock()ed while
# the cluster lives, so that suites running at once (ctest -j) never share
# one.
PORT_LOW, PORT_HIGH = 10000, 20000
PORT_LOCK_DIR = "/tmp/raftkv-test-ports"


def _reserve_ports(n):
    """n distinct free ports on 127.0.0.1, each with its lock file held
    (returned: close them to release the ports)."""
    try:
        os.mkdir(PORT_LOCK_DIR, 0o1777)
        os.chmod(PORT_LOCK_DIR, 0o1777)
    except FileExistsError:
        pass
    rng = random.Random()
    ports, locks = [], []
    for _ in range(1000):
        if len(ports) == n:
            return ports, locks
        port = rng.randrange(PORT_LOW, PORT_HIGH)
        if port in ports:
            continue
        fd = os.open(os.path.join(PORT_LOCK_DIR, str(port)),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # another process's
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                os.close(fd)  # in use by something else
                continue
        ports.append(port)
        locks.append(fd)
    for fd in locks:
        os.close(fd)
    raise RuntimeError("no %d free ports in %d-%d" % (n, PORT_LOW,
                                                      PORT_HIGH - 1))


class Cluster:
    """n kvserver nodes on 127.0.0.1; node i (0-based) has id i + 1."""

    def __init__(self, n=3, extra=()):
        self.n = n
        self.extra = list(extra)
        self.kvserver = kvserver_path()
        require(os.access(self.kvserver, os.X_OK),
                "no kvserver binary at %s (build it, or set "
                "RAFTKV_KVSERVER)" % self.kvserver)
        self.dir = tempfile.mkdtemp(prefix="raftkv-test-py-")
        self.secret = os.path.join(self.dir, "peer.secret")
        fd = os.open(self.secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        ports, self._port_locks = _reserve_ports(2 * n)
        self.ports = ports[:n]
        self.peer_ports = ports[n:]
        self.cluster_arg = ",".join("%d=127.0.0.1:%d" % (i + 1, p)
                                    for i, p in enumerate(self.ports))
        self.peers_arg = ",".join("%d=127.0.0.1:%d" % (i + 1, p)
                                  for i, p in enumerate(self.peer_ports))
        self.procs = [None] * n
        # setpriv --pdeathsig: a node dies with this process, even when
        # the test runner is killed (ctest's timeout).
        self.setpriv = shutil.which("setpriv")

    @property
    def endpoints(self):
        return ",".join("127.0.0.1:%d" % p for p in self.ports)

    def endpoint(self, i):
        return "127.0.0.1:%d" % self.ports[i]

    def start(self):
        for i in range(self.n):
            self.start_node(i)
        return self

    def start_node(self, i):
        assert self.procs[i] is None or self.procs[i].poll() is not None
        data = os.path.join(self.dir, "node%d" % (i + 1))
        argv = [self.kvserver, "--id", str(i + 1),
                "--cluster", self.cluster_arg, "--peers", self.peers_arg,
                "--peer-secret-file", self.secret, "--data-dir", data]
        argv += self.extra
        if self.setpriv:
            argv = [self.setpriv, "--pdeathsig", "KILL", "--"] + argv
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("RAFTKV_SERVER_")}
        log = open(os.path.join(self.dir, "node%d.log" % (i + 1)), "ab")
        try:
            self.procs[i] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=env)
        finally:
            log.close()

    def kill_node(self, i, sig=signal.SIGKILL):
        """Signal node i (ours) and wait for it to end."""
        p = self.procs[i]
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop(self):
        """Stop every node started here (SIGTERM, then SIGKILL)."""
        for p in self.procs:
            if p is not None and p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log_tail(self, lines=15):
        out = []
        for i in range(self.n):
            path = os.path.join(self.dir, "node%d.log" % (i + 1))
            try:
                with open(path, "rb") as f:
                    tail = f.read().decode(errors="replace").splitlines()
            except OSError:
                continue
            out.append("--- node %d ---" % (i + 1))
            out.extend(tail[-lines:])
        return "\n".join(out)

    def close(self, failed=False):
        self.stop()
        for fd in self._port_locks:
            os.close(fd)
        self._port_locks = []
        if failed:
            sys.stderr.write(self.log_tail() + "\n")
        if os.environ.get("RAFTKV_KEEP_TEST_DIR") == "1":
            sys.stderr.write("cluster data kept in %s\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def wait_ready(self, client_factory, timeout=30.0):
        """Wait until the cluster takes a write."""
        import raftkv
        deadline = time.monotonic() + timeout
        last = None
        with client_factory(self.endpoints, deadline_ms=1000) as c:
            while time.monotonic() < deadline:
                if all(p is not None and p.poll() is not None
                       for p in self.procs):
                    raise AssertionError("every node exited\n%s"
                                         % self.log_tail())
                try:
                    c.put("__ready__", "1")
                    return
                except raftkv.Error as e:
                    last = e
                    time.sleep(0.2)
        raise AssertionError("no leader took a write in %.0f s (last: %s)\n%s"
                             % (timeout, last, self.log_tail()))

    def leader_index(self, client):
        """The 0-based index of the node that leads (None: none known)."""
        lid = client.leader()
        return lid - 1 if lid else None
