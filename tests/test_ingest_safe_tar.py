"""Crafted malicious archives: each is refused with its own reason, nothing is written to disk."""
import gzip
import io
import tarfile

import pytest

from tasks.common.rejection import Rejected
from tasks.ingest.safe_tar import Limits, read_members, strip_top_folder

LIMITS = Limits(max_member_bytes=1000, max_package_bytes=1500, max_members=10)


def make_tar(entries, compress=True) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry["name"])
            kind = entry.get("type", tarfile.REGTYPE)
            info.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = entry["target"]
                tar.addfile(info)
            elif kind == tarfile.REGTYPE:
                data = entry.get("data", b"x")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def reason_of(data: bytes) -> str:
    with pytest.raises(Rejected) as caught:
        read_members(data, LIMITS)
    return caught.value.reason


def test_valid_package_is_read_and_top_folder_stripped():
    data = make_tar([{"name": "PMC1/a.nxml", "data": b"<article/>"}, {"name": "PMC1/img/f.jpg", "data": b"j"}])
    assert strip_top_folder(read_members(data, LIMITS)) == {"a.nxml": b"<article/>", "img/f.jpg": b"j"}


def test_uncompressed_tar_is_accepted():
    data = make_tar([{"name": "P/a.nxml", "data": b"<a/>"}], compress=False)
    assert read_members(data, LIMITS) == {"P/a.nxml": b"<a/>"}


@pytest.mark.parametrize(
    "entries, reason",
    [
        ([{"name": "P/../../etc/cron.d/x"}], "member_path_traversal"),
        ([{"name": "../x"}], "member_path_traversal"),
        ([{"name": "/etc/passwd"}], "member_path_absolute"),
        ([{"name": "C:\\windows\\x"}], "member_path_absolute"),
        ([{"name": "P/a"}, {"name": "P/link", "type": tarfile.SYMTYPE, "target": "../../etc/passwd"}],
         "member_link_escape"),
        ([{"name": "P/a"}, {"name": "P/link", "type": tarfile.SYMTYPE, "target": "/etc/passwd"}],
         "member_link_escape"),
        ([{"name": "P/a"}, {"name": "P/hard", "type": tarfile.LNKTYPE, "target": "etc/shadow"}],
         "member_link_escape"),
        ([{"name": "P/fifo", "type": tarfile.FIFOTYPE}], "member_special_file"),
        ([{"name": "P/big", "data": b"x" * 1001}], "member_too_large"),
        ([{"name": f"P/{i}", "data": b"x" * 400} for i in range(4)], "package_too_large"),
        ([{"name": f"P/{i}"} for i in range(11)], "too_many_members"),
        ([], "empty_package"),
    ],
)
def test_malicious_archives_are_refused(entries, reason):
    assert reason_of(make_tar(entries)) == reason


def test_link_inside_the_package_is_dropped_not_followed():
    data = make_tar([{"name": "P/a", "data": b"1"}, {"name": "P/b", "type": tarfile.SYMTYPE, "target": "a"}])
    assert read_members(data, LIMITS) == {"P/a": b"1"}


def test_truncated_and_garbage_archives():
    good = make_tar([{"name": "P/a", "data": bytes(range(256)) * 3}])
    assert reason_of(good[: len(good) // 2]) == "corrupt_archive"
    assert reason_of(b"this is not an archive at all") == "corrupt_archive"


def test_header_size_lies_are_caught():
    data = bytearray(make_tar([{"name": "P/a", "data": b"hello"}], compress=False))
    # Claim 4 bytes in the header while 5 follow: the member must not be trusted.
    header = tarfile.TarInfo("P/a")
    header.size = 4
    data[:512] = header.tobuf(format=tarfile.GNU_FORMAT)[:512]
    members = read_members(bytes(data), LIMITS)
    assert members["P/a"] == b"hell"
