"""Packages are read as a stream, one member at a time, with every cap applied to a member's
header before its bytes are read; dropped members are skipped, never held in memory."""
import contextlib
import gzip
import hashlib
import io
import tarfile
import tracemalloc

import pytest

from tasks.common.rejection import Rejected
from tasks.ingest import safe_tar
from tasks.ingest.package import Policy, inspect_package
from tasks.ingest.safe_tar import Limits, read_members, scan_members, strip_top_folder
from tasks.ingest.sources import PackageSource
from tests.helpers.oa_packages import write_package

MB = 1 << 20


def policy(**changes) -> Policy:
    cfg = {"max_member_bytes": 256 * MB, "max_package_bytes": 1 << 31, "max_members": 100,
           "max_xml_bytes": MB, "keep_suffixes": [".nxml", ".jpg", ".txt"],
           "licences": {"allowed": ["cc-by"], "require_commercial_use": False}}
    cfg.update(changes)
    return Policy.from_params(cfg)


@pytest.fixture
def extracted(monkeypatch):
    """Names of the members whose bytes tarfile was asked for."""
    names = []
    real = tarfile.TarFile.extractfile

    def recording(self, member):
        names.append(member.name)
        return real(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", recording)
    return names


def source(path) -> PackageSource:
    return PackageSource(uri=str(path), name=path.name)


def test_streamed_result_equals_reading_the_whole_package(tmp_path):
    path = write_package(tmp_path / "p.tar.gz", "PMC7", {"s1.mp4": 3 * MB, "sub/f2.jpg": b"jpeg" * 999})
    row, members = inspect_package(source(path), policy())
    everything = strip_top_folder(read_members(path.read_bytes(), policy().limits))
    kept = {n: d for n, d in everything.items() if n.endswith((".nxml", ".jpg", ".txt"))}
    assert dict(members.items()) == kept and sorted(members) == sorted(kept)
    assert row["dropped_members"] == ["s1.mp4"]
    assert row["package_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert row["pmcid"] == "PMC7" and row["nxml"] == "PMC7.nxml" and row["licence"] == "cc-by"


def test_a_large_dropped_member_is_skipped_not_held(tmp_path, extracted):
    size = 48 * MB
    path = write_package(tmp_path / "p.tar.gz", "PMC8", {"movie.mp4": size})
    tracemalloc.start()
    try:
        row, members = inspect_package(source(path), policy())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert row["dropped_members"] == ["movie.mp4"] and "movie.mp4" not in members
    assert "PMC8/movie.mp4" not in extracted and "PMC8/f1.jpg" in extracted
    assert peak < size / 6, f"reading the package allocated {peak} bytes for a {size}-byte dropped member"


def test_kept_members_spill_to_disk_beyond_the_spool(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_tar, "SPOOL_BYTES", MB)
    figures = {f"f{i}.jpg": bytes([i]) * (4 * MB) for i in range(2, 5)}
    path = write_package(tmp_path / "p.tar.gz", "PMC9", figures)
    tracemalloc.start()
    try:
        _, members = inspect_package(source(path), policy())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * MB, f"holding 12 MB of kept members allocated {peak} bytes"
    assert all(members[name] == data for name, data in figures.items())  # one member at a time


class OnlyRead:
    """A source that can only be read front to back; records each read's size."""

    def __init__(self, data: bytes):
        self._data, self.sizes = io.BytesIO(data), []

    def read(self, size=-1):
        self.sizes.append(size)
        return self._data.read(size)


def test_the_archive_is_read_front_to_back_in_bounded_reads(tmp_path):
    path = write_package(tmp_path / "p.tar.gz", "PMC3", {"big.bin": 5 * MB})
    reader = OnlyRead(path.read_bytes())
    files, store = scan_members(reader, policy().limits, lambda name, size: name.endswith(".nxml"))
    assert [m.name for m in files][-1] == "PMC3/big.bin" and list(store) == ["PMC3/PMC3.nxml"]
    assert reader.sizes and all(0 <= size <= MB for size in reader.sizes)


def tar_gz(members: dict[str, int], truncate_after_headers: bool = False) -> bytes:
    """Members of zeros; with truncation, the archive stops after the first header."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, size in members.items():
            info = tarfile.TarInfo(name)
            info.size = size
            if truncate_after_headers:
                raw.write(info.tobuf())
                break
            tar.addfile(info, io.BytesIO(bytes(size)))
    return gzip.compress(raw.getvalue(), mtime=0)


@pytest.mark.parametrize("members, limits, reason", [
    ({"P/huge.mp4": 10 * MB}, Limits(MB, 100 * MB, 10), "member_too_large"),
    ({"P/a": 2 * MB, "P/b": 2 * MB}, Limits(3 * MB, 3 * MB, 10), "package_too_large"),
])
def test_caps_apply_to_headers_before_any_member_bytes(members, limits, reason, extracted):
    # The data behind the first header is missing: reading it would fail as corrupt_archive.
    data = tar_gz(members, truncate_after_headers=reason == "member_too_large")
    with pytest.raises(Rejected) as caught:
        scan_members(io.BytesIO(data), limits, lambda name, size: True)
    assert caught.value.reason == reason
    assert extracted == ([] if reason == "member_too_large" else ["P/a"])


def test_too_many_members_stops_before_reading_the_rest(extracted):
    data = tar_gz({f"P/{i}.jpg": 10 for i in range(6)})
    with pytest.raises(Rejected) as caught:
        scan_members(io.BytesIO(data), Limits(MB, MB, 3), lambda name, size: True)
    assert caught.value.reason == "too_many_members" and extracted == ["P/0.jpg", "P/1.jpg", "P/2.jpg"]


def test_an_oversized_article_xml_is_refused_without_reading_it(tmp_path, extracted):
    big_xml = b"<article>" + b" " * (2 * MB) + b"</article>"
    path = write_package(tmp_path / "p.tar.gz", "PMC4", {"A.nxml": big_xml})  # sorts before PMC4.nxml
    with pytest.raises(Rejected) as caught:
        inspect_package(source(path), policy(keep_suffixes=[".jpg"]))
    assert caught.value.reason == "xml_too_large" and "PMC4/A.nxml" not in extracted
    with pytest.raises(Rejected) as kept:  # kept by suffix: read, then refused by the parser's cap
        inspect_package(source(path), policy())
    assert kept.value.reason == "xml_too_large"


def test_the_compressed_size_cap_holds_with_or_without_a_known_size(tmp_path, monkeypatch):
    path = write_package(tmp_path / "p.tar.gz", "PMC5", {"noise.jpg": bytes(range(256)) * 4096})
    cap = path.stat().st_size - 1
    with pytest.raises(Rejected) as caught:
        inspect_package(source(path), policy(max_package_bytes=cap))
    assert caught.value.reason == "package_too_large"

    @contextlib.contextmanager
    def unsized(uri, mode):  # an HTTP server that sends no Content-Length
        yield OnlyRead(path.read_bytes())

    monkeypatch.setattr("tasks.ingest.sources.fsspec.open", unsized)
    with pytest.raises(Rejected) as streamed:
        inspect_package(source(path), policy(max_package_bytes=cap))
    assert streamed.value.reason == "package_too_large"
    assert inspect_package(source(path), policy())[0]["pmcid"] == "PMC5"


def test_a_source_failing_mid_stream_is_an_os_error_not_a_corrupt_archive(tmp_path, monkeypatch):
    data = write_package(tmp_path / "p.tar.gz", "PMC6", {"f2.jpg": bytes(range(256)) * 8192}).read_bytes()

    class Dropped(OnlyRead):
        def read(self, size=-1):
            if self._data.tell() > len(data) // 2:
                raise ConnectionResetError("connection reset by peer")
            return super().read(size)

    @contextlib.contextmanager
    def failing(uri, mode):
        yield Dropped(data)

    monkeypatch.setattr("tasks.ingest.sources.fsspec.open", failing)
    with pytest.raises(ConnectionResetError):
        inspect_package(source(tmp_path / "p.tar.gz"), policy())
