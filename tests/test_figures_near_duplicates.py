"""The vectorised near-duplicate search finds exactly what the reference pairwise one finds."""
import random

import pytest

from tasks.figures.images import near_duplicates as reference
from tasks.figures.near_duplicates import near_duplicates


def _items(rng: random.Random) -> list[tuple[str, str, str]]:
    """Figures of 30 articles whose hashes are a few bit flips from a few originals."""
    originals = [rng.getrandbits(64) for _ in range(rng.randint(1, 20))]
    items = {}
    for i in range(rng.randint(0, 250)):
        value = rng.choice(originals)
        for _ in range(rng.randint(0, 9)):
            value ^= 1 << rng.randrange(64)
        article = f"PMC{rng.randint(0, 30)}"
        items[f"{article}_f{i}"] = (f"{article}_f{i}", article, f"{value:016x}")
    return list(items.values())


@pytest.mark.parametrize("seed", range(12))
def test_same_pairs_as_the_reference(seed):
    items = _items(random.Random(seed))
    for distance in (-1, 0, 2, 6, 7, 10):
        assert near_duplicates(items, distance) == reference(items, distance)


def test_a_bucket_of_equal_hashes_is_compared_in_blocks():
    items = [(f"PMC{i}_f1", f"PMC{i}", "00ff00ff00ff00ff") for i in range(3000)]
    found = near_duplicates(items, 0)
    assert len(found) == 3000 and found["PMC0_f1"] == "PMC1000_f1" and found["PMC1000_f1"] == "PMC0_f1"
