import copy

import pytest

from tests.report.synthetic import make_curves, make_results


@pytest.fixture
def results() -> dict:
    return copy.deepcopy(make_results())


@pytest.fixture
def curves() -> dict:
    return make_curves()
