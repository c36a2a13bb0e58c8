"""test_secure: the Client's TLS and user settings on real clusters that
serve clients over TLS and have auth enabled (set up with kvctl): a
password authenticates a user, a client certificate's CN is the user
where the servers require certificates, and the errors map to
Unauthenticated and PermissionDenied."""

import os
import subprocess
import unittest

import support
import cluster

import raftkv


def kvctl_path():
    return os.environ.get("RAFTKV_KVCTL",
                          os.path.join(support.REPO, "build", "clerk", "kvctl"))


class SecureCluster:
    """A cluster of n nodes serving clients over TLS (with client_auth:
    requiring client certificates), with users root (role root) and alice
    (no role), and auth enabled."""

    def __init__(self, n, client_auth):
        certs_sh = os.path.join(support.REPO, "scripts", "certs.sh")
        cluster.require(os.access(kvctl_path(), os.X_OK),
                        "no kvctl at %s (RAFTKV_KVCTL)" % kvctl_path())
        self.cl = cl = cluster.Cluster(n)
        try:
            certs = os.path.join(cl.dir, "certs")

            def run(*args):
                subprocess.run([certs_sh] + list(args), check=True,
                               capture_output=True)

            def c(name):
                return os.path.join(certs, name)

            run("ca", certs)
            run("node", certs, "node", "127.0.0.1", "localhost")
            run("client", certs, "root")
            run("client", certs, "alice")
            cl.extra = ["--tls-cert", c("node.crt"), "--tls-key",
                        c("node.key")]
            if client_auth:
                cl.extra += ["--tls-ca", c("ca.crt"), "--tls-client-auth"]
            self.ca = c("ca.crt")
            self.root = raftkv.TLS(c("ca.crt"), c("root.crt"), c("root.key"))
            self.alice = raftkv.TLS(c("ca.crt"), c("alice.crt"),
                                    c("alice.key"))
            cl.start()
            cl.wait_ready(lambda e, **kw: raftkv.Client(e, tls=self.root,
                                                        **kw))
            kvctl = [kvctl_path(), "--cluster", cl.endpoints, "--cacert",
                     c("ca.crt"), "--cert", c("root.crt"), "--key",
                     c("root.key")]
            for cmd in (["user", "add", "root:rootpw"],
                        ["user", "grant-role", "root", "root"],
                        ["user", "add", "alice:alicepw"],
                        ["auth", "enable"]):
                r = subprocess.run(kvctl + cmd, capture_output=True,
                                   text=True)
                assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        except BaseException:
            cl.close(failed=True)
            raise

    def client(self, **kw):
        kw.setdefault("deadline_ms", 3000)
        return raftkv.Client(self.cl.endpoints, **kw)


class TestPasswords(unittest.TestCase):
    """TLS (the CA only) and users with passwords."""

    @classmethod
    def setUpClass(cls):
        cls.sc = SecureCluster(3, client_auth=False)

    @classmethod
    def tearDownClass(cls):
        cls.sc.cl.close()

    def test_password_user(self):
        with self.sc.client(tls=self.sc.ca, user="root",
                            password="rootpw") as c:
            c.put("secure/b", "root by password")
            self.assertEqual(c.get("secure/b"), b"root by password")
        with self.sc.client(tls=self.sc.ca, user="alice",
                            password="alicepw") as c:
            with self.assertRaises(raftkv.PermissionDenied) as cm:
                c.put("secure/b", "alice")
            self.assertEqual(cm.exception.code, "PERMISSION_DENIED")
            self.assertIsInstance(cm.exception, PermissionError)
            self.assertIn("alice", cm.exception.message)

    def test_unauthenticated(self):
        for user, password in (("root", "wrong"), ("nobody", "x"),
                               (None, None)):
            with self.sc.client(tls=self.sc.ca, user=user,
                                password=password) as c:
                with self.assertRaises(raftkv.Unauthenticated) as cm:
                    c.put("secure/c", "v")
                self.assertEqual(cm.exception.code, "UNAUTHENTICATED")
                self.assertTrue(cm.exception.message)

    def test_tls_needs_a_trusted_server(self):
        # Plaintext to a TLS port: no answer.
        with self.sc.client(deadline_ms=1000, user="root",
                            password="rootpw") as c:
            with self.assertRaises((raftkv.Unavailable, raftkv.Timeout)):
                c.get("secure/a")
        with self.assertRaises(raftkv.InvalidArgument) as cm:
            raftkv.Client(self.sc.cl.endpoints, tls="/nonexistent/ca.crt")
        self.assertIn("ca.crt", cm.exception.message)


class TestClientCertificates(unittest.TestCase):
    """Servers that require client certificates: the CN is the user."""

    @classmethod
    def setUpClass(cls):
        cls.sc = SecureCluster(1, client_auth=True)

    @classmethod
    def tearDownClass(cls):
        cls.sc.cl.close()

    def test_certificate_is_the_user(self):
        with self.sc.client(tls=self.sc.root) as c:
            c.put("secure/a", "1")
            self.assertEqual(c.get("secure/a"), b"1")
        with self.sc.client(tls=self.sc.alice) as c:
            with self.assertRaises(raftkv.PermissionDenied):
                c.put("secure/a", "2")
            with self.assertRaises(raftkv.PermissionDenied):
                c.get("secure/a")

    def test_no_certificate_refused(self):
        with self.sc.client(tls=self.sc.ca, deadline_ms=1000) as c:
            with self.assertRaises((raftkv.Unavailable, raftkv.Timeout)):
                c.get("secure/a")


if __name__ == "__main__":
    unittest.main()
