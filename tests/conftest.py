import pytest
import torch

# Test tensors are tiny: one thread is as fast, and it never oversubscribes a busy CI box.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
