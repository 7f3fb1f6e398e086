"""The parts incremental updates rest on: content-set shard boundaries, version resolution,
cache keys and entries."""
import json
import os
import time

import numpy as np
import pytest

from tasks.incremental.layout import MAX_FACTOR, content_groups
from tasks.incremental.store import ItemCache, cache_dir_for, fingerprint, item_key, params_for_key
from tasks.ingest.versions import Candidate, resolve


def _ids(numbers):
    return [f"PMC{n}" for n in sorted(numbers)]


def test_an_insertion_changes_only_the_group_it_falls_in():
    before = content_groups(_ids(range(1000, 3000, 2)), 20)
    after = content_groups(_ids([*range(1000, 3000, 2), 2001]), 20)
    changed = [g for g in after if g not in before]
    assert 1 <= len(changed) <= 2 and any("PMC2001" in g for g in changed)
    assert len([g for g in before if g not in after]) <= 2
    assert [i for g in after for i in g] == _ids([*range(1000, 3000, 2), 2001])


def test_groups_are_about_the_target_and_never_past_the_cap():
    groups = content_groups(_ids(range(5000)), 25)
    assert 100 < len(groups) < 400 and max(map(len, groups)) <= MAX_FACTOR * 25
    assert content_groups(_ids(range(5)), 1) == [[i] for i in _ids(range(5))]
    with pytest.raises(ValueError):
        content_groups(["PMC1"], 0)


def _candidate(pmcid, source, sha, updated=None):
    return Candidate(pmcid, source, sha, updated, "part")


def test_versions_by_last_updated_then_name_and_duplicates_by_bytes():
    found = resolve([_candidate("PMC1", "b.tar.gz", "h2", "2025-01-01"), _candidate("PMC1", "a.tar.gz", "h1", "2024-01-01"),
                     _candidate("PMC1", "c.tar.gz", "h1", "2026-01-01"), _candidate("PMC2", "z.tar.gz", "h3"),
                     _candidate("PMC2", "y.tar.gz", "h4")], set(), "ingest")
    assert found.current["PMC1"].source == "b.tar.gz" and found.current["PMC2"].source == "z.tar.gz"
    assert found.versions["a.tar.gz"].status == "superseded" and found.versions["a.tar.gz"].superseded_by == "h2"
    assert found.versions["y.tar.gz"].superseded_by == "h3"  # no dates: the later name is the later version
    assert {(r["item"], r["reason"]) for r in found.rejected} == {
        ("c.tar.gz", "duplicate_pmcid"), ("a.tar.gz", "superseded"), ("y.tar.gz", "superseded")}


def test_every_version_of_a_retracted_pmcid_is_dropped():
    found = resolve([_candidate("PMC1", "a", "h1", "1"), _candidate("PMC1", "b", "h2", "2"),
                     _candidate("PMC3", "c", "h3")], {"PMC1"}, "ingest")
    assert list(found.current) == ["PMC3"]
    assert [found.versions[s].status for s in ("a", "b")] == ["retracted", "retracted"]
    assert sorted(r["reason"] for r in found.rejected) == ["retracted", "retracted"]


def test_keys_follow_every_param_but_the_layout_ones():
    cfg = {"dpi": 150, "articles_per_task": 10, "run_root": "/x", "new_knob": 1}
    base = item_key("figures", params_for_key(cfg, ["articles_per_task"]))
    assert base == item_key("figures", params_for_key({**cfg, "articles_per_task": 3, "run_root": "/y"},
                                                      ["articles_per_task"]))
    assert base != item_key("figures", params_for_key({**cfg, "new_knob": 2}, ["articles_per_task"]))


def test_cache_folder_entries_and_pruning(tmp_path):
    assert cache_dir_for(tmp_path / ".ingest.partial") == cache_dir_for(tmp_path / "ingest") == tmp_path / ".ingest.cache"
    cache = ItemCache(tmp_path / "c")
    cache.write_json("ab12", ".json", {"v": 1})
    cache.write_json("cd34", ".json", {"v": 2})
    assert cache.read_json("ab12", ".json") == {"v": 1} and ItemCache(tmp_path / "c", read=False).hit("ab12", ".json") is None
    old = time.time() - 3 * 24 * 3600
    os.utime(cache.path("cd34", ".json"), (old, old))
    assert cache.prune({"ab12"}) == 1 and cache.hit("cd34", ".json") is None and cache.hit("ab12", ".json")
    assert cache.prune(set()) == 0  # used recently: kept for a day


def test_fingerprint_follows_content_and_rereads_only_changed_files(tmp_path):
    (tmp_path / "i").mkdir()
    a, b = tmp_path / "i" / "a", tmp_path / "i" / "b"
    a.write_text("one")
    b.write_text("two")
    memo = tmp_path / "memo.json"
    first = fingerprint([a, b], tmp_path / "i", memo)
    assert fingerprint([b, a], tmp_path / "i", memo) == first
    b.write_text("tw0")
    assert fingerprint([a, b], tmp_path / "i", memo) != first
    assert set(json.loads(memo.read_text())) == {"a", "b"}


def test_cached_shards_run_in_the_flow_process_and_the_rest_as_tasks_in_order():
    from tasks.common.sharding import fan_out_unless_cached

    submitted, here = [], []

    def fan_out(fn, shards, *shared, name):
        submitted.extend(shards)
        return [("task", s, *shared) for s in shards]

    def fn(shard, extra):
        here.append(shard)
        return ("here", shard, extra)

    results = fan_out_unless_cached(fan_out, fn, ["a", "b", "c", "d"], lambda s: s in {"b", "d"}, "x", name="t")
    assert results == [("task", "a", "x"), ("here", "b", "x"), ("task", "c", "x"), ("here", "d", "x")]
    assert submitted == ["a", "c"] and here == ["b", "d"]


def test_placing_an_entry_twice_or_over_an_old_file_leaves_the_entry_there(tmp_path):
    cache = ItemCache(tmp_path / "cache")
    dest = tmp_path / "out" / "shard.tar"
    built = []
    build = lambda tmp: (built.append(tmp), tmp.write_bytes(b"shard"))
    assert cache.place("k1", ".tar", dest, build) is False
    assert cache.place("k1", ".tar", dest, build) is True       # same folder again: no error
    assert os.path.samefile(dest, cache.path("k1", ".tar")) and len(built) == 1
    assert cache.has("k1", ".tar") and not cache.has("k1", ".tar", ".json")
    assert not ItemCache(tmp_path / "cache", read=False).has("k1", ".tar")  # incremental off: no hit
    dest.unlink()
    dest.write_bytes(b"stale")                                    # an old file of that name
    assert cache.place("k1", ".tar", dest, build) is True
    assert dest.read_bytes() == b"shard" and os.path.samefile(dest, cache.path("k1", ".tar"))


def test_pruning_with_sorted_keys_keeps_exactly_the_live_entries(tmp_path):
    from tasks.incremental.store import SortedKeys

    cache, old = ItemCache(tmp_path / "c"), time.time() - 3 * 24 * 3600
    keys = [item_key("k", n) for n in range(6)]
    for key in keys:
        cache.write_json(key, ".json", {})
        os.utime(cache.path(key, ".json"), (old, old))
    live = SortedKeys(np.array([keys[4], keys[1], keys[1]], dtype="S64"))
    assert keys[1] in live and keys[0] not in live and "f" * 64 not in live
    assert cache.prune(live) == 4 and [k for k in keys if cache.hit(k, ".json")] == [keys[1], keys[4]]
