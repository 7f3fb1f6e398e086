import pytest

from tasks.ingest.licences import classify, commercial_use_ok


@pytest.mark.parametrize(
    "url, text, oa, expected",
    [
        ("http://creativecommons.org/licenses/by/4.0/", "", None, "cc-by"),
        ("https://creativecommons.org/licenses/by-nc-sa/3.0/igo/", "", None, "cc-by-nc-sa"),
        ("http://creativecommons.org/licenses/by-nc/3.0", "", None, "cc-by-nc"),
        ("http://creativecommons.org/publicdomain/zero/1.0/", "", None, "cc0"),
        ("http://creativecommons.org/publicdomain/mark/1.0/", "", None, "pd"),
        (None, "This is an open-access article distributed under the terms of the Creative Commons "
               "Attribution License, which permits unrestricted use", None, "cc-by"),
        (None, "Creative Commons Attribution-NonCommercial-NoDerivs License", None, "cc-by-nc-nd"),
        (None, "All rights reserved.", None, "unknown"),
        (None, "All rights reserved.", "CC BY-NC", "cc-by-nc"),
        (None, "", "CC0", "cc0"),
        (None, "", "NO-CC CODE", "unknown"),
    ],
)
def test_classify(url, text, oa, expected):
    assert classify(url, text, oa) == expected


def test_commercial_use():
    assert commercial_use_ok("cc-by") and commercial_use_ok("cc0") and commercial_use_ok("pd")
    assert not commercial_use_ok("cc-by-nc") and not commercial_use_ok("cc-by-nc-sa")
    assert not commercial_use_ok("unknown")
