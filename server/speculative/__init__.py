"""Speculative decoding for a sequence decoding alone: draft sources propose the next tokens, one
forward verifies them, the cache rolls back to what was accepted (generation thread only).

    sources.py      the draft source interface and the modes
    copy_drafts.py  prompt lookup: the continuation of the longest recent match in the context
    draft_model.py  a draft model decodes greedily on its own cache, kept in step
    mtp_drafts.py   the model's MTP head guesses from the verify's hidden states; copies extend it
    verify.py       one verify step: [pending + drafts] in one forward, accept, roll back
    rollback.py     undo the rejected tail: trim KV layers, restore and re-run hybrid state
    policy.py       the draft length each step: a measured cost model and the running acceptance
    guard.py        never slower: seconds per token measured while drafting against plain
    stats.py        tokens drafted and accepted, per request and for the worker
"""
