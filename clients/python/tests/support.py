"""support: what every test module does first: find the package and
libclerk of this source tree unless told otherwise."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.abspath(os.path.join(HERE, ".."))
REPO = os.path.abspath(os.path.join(PKG, "..", ".."))

# The package of this tree (ctest sets PYTHONPATH to it as well).
if os.environ.get("RAFTKV_PY_USE_INSTALLED") != "1" and PKG not in sys.path:
    sys.path.insert(0, PKG)
# libclerk of the default build directory when none is named.
if "RAFTKV_LIBCLERK" not in os.environ:
    built = os.path.join(REPO, "build", "clerk", "libclerk.so.0")
    if os.path.exists(built):
        os.environ["RAFTKV_LIBCLERK"] = built
