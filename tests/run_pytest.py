"""Run pytest, treating "no tests collected" (exit 5) as success for a selection.

`make unit` and `make vm-test` select by marker; an empty selection is not a failure of
the code under test, so it must not turn CI red. Every other exit code passes through.
"""

import sys

import pytest

NO_TESTS_COLLECTED = 5

if __name__ == "__main__":
    code = pytest.main(sys.argv[1:])
    if code == NO_TESTS_COLLECTED:
        print("run_pytest: no tests selected; treating as success")
        code = 0
    sys.exit(int(code))
