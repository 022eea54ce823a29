"""Speculative decoding for a sequence decoding alone: draft sources propose the next tokens, one
forward verifies them, the cache rolls back to what was accepted (generation thread only).

    sources.py      the draft source interface (copy drafts now; MTP heads, a draft model later)
    copy_drafts.py  prompt lookup: the continuation of the longest recent match in the context
    verify.py       one verify step: [pending + drafts] in one forward, accept, roll back
    rollback.py     undo the rejected tail: trim KV layers, restore and re-run hybrid state
    policy.py       the draft length each step: a measured cost model and the running acceptance
    guard.py        never slower: seconds per token measured while drafting against plain
    stats.py        tokens drafted and accepted, per request and for the worker
"""
