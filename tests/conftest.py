import pytest
import torch

# Test tensors are tiny: one thread is as fast, and it never oversubscribes a busy CI box.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _table_cache(tmp_path_factory, monkeypatch):
    # Parsed user tables are cached in the user's cache dir: tests (and the subprocesses they
    # start, which inherit the environment) keep theirs in a temporary folder instead.
    monkeypatch.setenv("ANYFORMER_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "table-cache"))
    yield
