"""The one negation/uncertainty engine (tasks/common/assertion.py): scopes, bounds, clauses, errors.
Its caption and report cases are in tests/test_linking.py and tests/test_reports_rules.py."""
from __future__ import annotations

from typing import get_args

import pytest

from tasks.common.assertion import ABSENT, PRESENT, RULE_LISTS, UNCERTAIN, AssertionRules
from tasks.schema.literature import AssertionRuleList


def _flags(rules: AssertionRules, text: str, word: str) -> tuple[bool, bool]:
    start = text.index(word)
    return rules.flags(rules.scan(text), start, start + len(word))


def test_max_scope_counts_the_words_between():
    text = "no sign of fluid in the left or right lower chest near the effusion"
    assert _flags(AssertionRules(), text, "effusion") == (True, False)  # no limit: the text is the scope
    assert _flags(AssertionRules(max_scope=8), text, "effusion") == (False, False)  # 10 words away
    assert _flags(AssertionRules(max_scope=8), text, "fluid") == (True, False)
    post = "effusion in the lower chest was ruled out"
    assert _flags(AssertionRules(max_scope=5), post, "effusion") == (True, False)  # 4 words between
    assert _flags(AssertionRules(max_scope=4), post, "effusion") == (False, False)


def test_triggers_never_match_inside_words_and_punctuation_needs_no_word():
    rules = AssertionRules()
    assert _flags(rules, "nodule in the liver", "liver") == (False, False)  # "no" of "nodule"
    assert _flags(rules, "cannot exclude nothing but a nodule", "nodule") == (False, False)  # "but" ends it
    assert _flags(rules, "a node?", "node") == (False, True)
    assert _flags(rules, "no effusion; a large mass", "mass") == (False, False)
    assert _flags(rules, "no effusion; a large mass", "effusion") == (True, False)


def test_negation_and_uncertainty_together_and_decide():
    rules = AssertionRules()
    text = "no definite nodule?"
    assert _flags(rules, text, "nodule") == (True, True)
    start = text.index("nodule")
    assert rules.decide(rules.scan(text), start, start + 6) == ABSENT  # negation outranks uncertainty
    assert rules.classify("possible nodule", 9, 15) == UNCERTAIN
    assert rules.classify("nodule", 0, 6) == PRESENT


def test_within_limits_triggers_to_a_clause():
    rules = AssertionRules()
    text = "there is no effusion and a nodule is seen"
    scan = rules.scan(text)
    start = text.index("nodule")
    assert rules.decide(scan, start, start + 6) == ABSENT  # one scope, no terminator between
    clause = text.index("a nodule")
    assert rules.decide(scan.within(clause, len(text)), start, start + 6) == PRESENT


def test_pseudo_triggers_hide_the_triggers_inside_them():
    rules = AssertionRules()
    assert _flags(rules, "no interval change in the nodule", "nodule") == (False, False)
    assert _flags(rules, "lesions in the white matter (not shown)", "white matter") == (False, False)
    assert _flags(rules, "lesions in the white matter were not shown", "white matter") == (True, False)


def test_replaced_rule_lists_and_clear_errors():
    only_without = AssertionRules({"negation_pre": ["without"]})
    assert _flags(only_without, "no effusion", "effusion") == (False, False)
    assert _flags(only_without, "without effusion", "effusion") == (True, False)
    with pytest.raises(ValueError, match="unknown assertion rule list 'negaton_pre'"):
        AssertionRules({"negaton_pre": ["no"]})
    with pytest.raises(ValueError, match="'negation_pre': '\\(no' is not a regular expression"):
        AssertionRules({"negation_pre": ["(no"]})
    with pytest.raises(ValueError, match="at least 1 word"):
        AssertionRules(max_scope=0)


def test_schema_names_the_engines_rule_lists():
    assert set(get_args(AssertionRuleList)) == set(RULE_LISTS)
