"""run: run test modules for ctest: exit 0 when they pass, 1 when one
fails, 77 (ctest's SKIP_RETURN_CODE) when none failed but some were
skipped (a missing kvserver or Python module; RAFTKV_REQUIRE_ALL=1 makes
those fail instead).

    python3 run.py test_client [test_failover ...]
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import support  # noqa: E402,F401


def main(names):
    suite = unittest.defaultTestLoader.loadTestsFromNames(names)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        return 1
    if result.skipped:
        return 77
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
