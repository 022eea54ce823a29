"""Copy drafts: the continuation of the longest, then latest, match of the context's suffix."""

from __future__ import annotations

from server.speculative.copy_drafts import NOT_A_TOKEN, CopyDrafts


def test_the_longest_match_wins_and_then_the_latest():
    # "1 2 3" occurs twice (followed by 4, then by 9); "5 1 2 3" once, followed by 9.
    drafts = CopyDrafts([1, 2, 3, 4, 7, 5, 1, 2, 3, 9, 8, 6, 5, 1, 2, 3])
    assert drafts.propose(3) == [9, 8, 6]
    # Two matches of equal length: the latest one.
    drafts = CopyDrafts([1, 2, 3, 4, 1, 2, 5, 1, 2])
    assert drafts.propose(2) == [5, 1]


def test_no_guess_without_a_long_enough_match():
    assert CopyDrafts([1, 2, 3, 4]).propose(4) == []  # nothing repeats
    assert CopyDrafts([7, 1, 8, 1]).propose(4) == []  # one token repeats: below MIN_MATCH
    assert CopyDrafts([1, 2, 3, 1, 2]).propose(0) == []


def test_the_guess_follows_the_context_as_it_grows_and_stops_at_its_end():
    drafts = CopyDrafts([10, 11, 12, 13])
    drafts.extend([10, 11])
    assert drafts.propose(8) == [12, 13, 10, 11]  # the continuation runs into the suffix itself
    for token in range(1000):  # grows past its first buffer
        drafts.extend([token % 50 + 100])
    assert len(drafts) == 1006
    assert drafts.propose(3) == [100, 101, 102]  # the period of 50 repeats


def test_a_draft_stops_where_an_image_stood():
    # An image's positions carry cache-key ids, not tokens: the runner marks them NOT_A_TOKEN.
    drafts = CopyDrafts([5, 6, 7, NOT_A_TOKEN, NOT_A_TOKEN, 8, 5, 6])
    assert drafts.propose(4) == [7]
    assert CopyDrafts([5, 6, NOT_A_TOKEN, 9, 5, 6]).propose(3) == []
