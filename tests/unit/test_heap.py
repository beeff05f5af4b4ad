import gc
from collections.abc import Iterator

import pytest

from shared.heap import freeze_startup_objects


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_made_while_starting_are_no_longer_walked_by_collections(unfrozen: None) -> None:
    made_at_startup = [{"route": i} for i in range(1000)]
    walked = len(gc.get_objects())
    freeze_startup_objects()
    assert gc.get_freeze_count() >= len(made_at_startup)
    assert len(gc.get_objects()) < walked - len(made_at_startup)
