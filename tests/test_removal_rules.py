"""What protects an image from deletion, on its own: removal.protection(), a pure function of the
record, the source's identity, the evidence that the image is gone and the destination copy."""

from __future__ import annotations

import json

from asyncmigrate.removal import CopyEvidence, GoneEvidence, RecordTrust, protection

COPY = json.dumps({"created_at": "2026-01-01T00:00:00Z", "checksum": "ab", "os_hash_value": "cd", "size": 3})
TRUSTED = RecordTrust(bound=True, held=9, recorded=10)
GONE = GoneEvidence(listing_complete=True, listed=False, at_source=False)
SAME = CopyEvidence(recorded=COPY, now=COPY)


def test_an_image_with_every_piece_of_evidence_may_be_deleted() -> None:
    """Bound record, most of it still held, listing complete without it, a 404 now, the copy unchanged: delete."""
    assert protection(TRUSTED, GONE, SAME) is None


def test_the_evidence_that_it_is_gone_must_be_complete() -> None:
    """An unfinished listing protects the whole record; a listed image, or one the source still answers
    for or was not asked about, is protected."""
    unfinished = protection(TRUSTED, GoneEvidence(False, False, False), SAME)
    assert unfinished is not None and unfinished.whole_record
    for gone in (GoneEvidence(True, True, False), GoneEvidence(True, False, True), GoneEvidence(True, False, None)):
        why = protection(TRUSTED, gone, SAME)
        assert why is not None and not why.whole_record


def test_a_record_not_bound_to_this_source_protects_everything() -> None:
    """A record whose source identity did not match protects every image of it."""
    why = protection(RecordTrust(bound=False, held=10, recorded=10), GONE, SAME)
    assert why is not None and why.whole_record


def test_a_source_that_lists_less_than_half_of_its_record_protects_everything_unless_confirmed() -> None:
    """Fewer than half of the recorded images still listed: another cloud or credentials that see less —
    nothing is deleted; exactly half is enough; the operator's --confirm-source lifts it; an uncounted
    holding (--image runs) is judged by the start-of-run sample only."""
    few = protection(RecordTrust(bound=True, held=4, recorded=9), GONE, SAME)
    assert few is not None and few.whole_record and "4 of the 9" in few.reason
    assert protection(RecordTrust(bound=True, held=5, recorded=10), GONE, SAME) is None
    assert protection(RecordTrust(bound=True, held=0, recorded=9, confirmed=True), GONE, SAME) is None
    assert protection(RecordTrust(bound=True, held=None, recorded=0), GONE, SAME) is None


def test_only_the_copy_the_record_saw_may_be_deleted() -> None:
    """A row of an older version (no copy noted), a destination image no longer there, and one that is
    not the recorded copy (another created_at, size or hash) are each protected, that image only."""
    other = json.dumps({**json.loads(COPY), "created_at": "2031-01-01T00:00:00Z"})
    for copy in (CopyEvidence(None, COPY), CopyEvidence(COPY, None), CopyEvidence(COPY, other)):
        why = protection(TRUSTED, GONE, copy)
        assert why is not None and not why.whole_record
    changed = protection(TRUSTED, GONE, CopyEvidence(COPY, other))
    assert changed is not None and "created_at" in changed.reason
