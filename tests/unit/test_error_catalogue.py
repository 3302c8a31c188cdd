"""docs/errors.md is generated from the bad-input catalogue (tests/support/error_catalogue.py) and is
not stale; tests/e2e/test_errors.py runs each case against the live stack."""

import os

from error_catalogue import CASES, render
from helpers import ROOT


def test_the_catalogue_is_long_enough_and_documented():
    assert len(CASES) >= 25
    with open(os.path.join(ROOT, "docs", "errors.md")) as f:
        assert f.read() == render(), (
            "docs/errors.md is stale: regenerate it (python tests/support/error_catalogue.py > docs/errors.md)"
        )
