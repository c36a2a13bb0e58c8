"""test_install: `pip install` of the package works offline, in a fresh
virtual environment that sees the system's setuptools (Debian's
python3-venv, python3-pip, python3-setuptools, python3-wheel), and the
installed package imports, finds libclerk and answers."""

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

import support
import cluster


def _has(module, python=sys.executable):
    return subprocess.run([python, "-c", "import " + module],
                          capture_output=True).returncode == 0


class TestInstall(unittest.TestCase):
    def test_pip_install_in_venv(self):
        for m in ("venv", "pip", "setuptools", "wheel"):
            cluster.require(_has(m), "python module %s is missing (Debian: "
                            "python3-venv, python3-pip, python3-setuptools, "
                            "python3-wheel)" % m)
        tmp = tempfile.mkdtemp(prefix="raftkv-test-py-venv-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        venv = os.path.join(tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                        "--system-site-packages", venv], check=True)
        py = os.path.join(venv, "bin", "python")
        # A copy of the source: pip builds in it (an egg-info, build/),
        # and the tree stays clean.
        src = os.path.join(tmp, "src")
        shutil.copytree(support.PKG, src, ignore=shutil.ignore_patterns(
            "tests", "__pycache__", "build", "*.egg-info"))
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PIP_INDEX_URL")}
        env["PIP_NO_INDEX"] = "1"
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        r = subprocess.run([py, "-m", "pip", "install", "--no-build-isolation",
                            "--no-index", "--no-deps", src],
                           capture_output=True, text=True, env=env,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        check = textwrap.dedent("""
            import os, sys, raftkv
            assert raftkv.__file__.startswith(sys.prefix), raftkv.__file__
            with raftkv.Client("127.0.0.1:9", deadline_ms=200) as c:
                try:
                    c.get("k")
                except (raftkv.Unavailable, raftkv.Timeout) as e:
                    print("answered", e.code)
        """)
        r = subprocess.run([py, "-c", check], capture_output=True, text=True,
                           env=env, cwd=tmp, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("answered", r.stdout)
        r = subprocess.run([py, "-m", "pip", "uninstall", "-y", "raftkv"],
                           capture_output=True, text=True, env=env,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)


if __name__ == "__main__":
    unittest.main()
