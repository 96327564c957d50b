from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run torch on one thread: the tests' tensors are small, so intra-op threads only add overhead, and on a
    shared 2-core machine competing threads made them several times slower (measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def keep_denormals() -> Iterator[None]:
    """The examples' entry points flush denormals to zero for the whole process; the tests after them check the
    library in default float arithmetic."""
    yield
    torch.set_flush_denormal(False)


def flushes_denormals() -> bool:
    """Whether float32 arithmetic now flushes denormals (1e-39 is one) to zero."""
    return bool((torch.tensor([1e-39]) * 2 == 0).item())
