"""test_abi: the ctypes mirror of clerk.h in raftkv/_lib.py matches the
header: struct sizes, field offsets and constants, as a program compiled
from clerk.h (abi_dump.c; ctest names it in $RAFTKV_PY_ABI_DUMP) sees
them; and every function bound is exported by libclerk."""

import os
import subprocess
import unittest

import support  # noqa: F401  (sys.path, RAFTKV_LIBCLERK)
import cluster

from raftkv import _lib

# ctypes names a field that is a Python keyword differently.
RENAMED = {"clerk_txn_response.del": "del_"}


class TestAbi(unittest.TestCase):
    def test_layout_matches_clerk_h(self):
        dump = os.environ.get("RAFTKV_PY_ABI_DUMP", "")
        cluster.require(os.access(dump, os.X_OK),
                        "no abi_dump program (RAFTKV_PY_ABI_DUMP; ctest "
                        "builds raftkv_py_abi_dump)")
        out = subprocess.run([dump], check=True, capture_output=True,
                             text=True).stdout
        checked = 0
        for line in out.splitlines():
            kind, name, value = line.split()
            value = int(value)
            if kind == "size":
                self.assertEqual(ctypes_size(name), value, name)
            elif kind == "field":
                s, f = name.split(".")
                f = RENAMED.get(name, f)
                self.assertEqual(getattr(_lib.STRUCTS[s], f).offset, value,
                                 name)
            else:
                self.assertEqual(getattr(_lib, name), value, name)
            checked += 1
        self.assertGreater(checked, 100)
        self.assertEqual(len(_lib.ERRORS), 22)

    def test_every_function_exported(self):
        for name in _lib.PROTOTYPES:
            self.assertTrue(hasattr(_lib.lib, name), name)


def ctypes_size(name):
    import ctypes
    return ctypes.sizeof(_lib.STRUCTS[name])


if __name__ == "__main__":
    unittest.main()
