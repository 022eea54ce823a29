"""The text of recent PDFs is kept by digest: a session resends its PDF every turn."""

from __future__ import annotations

import base64

import pypdf

from server.api import pdf_text
from tests.pdf_files import text_pdf


def encoded(*pages: str) -> str:
    return base64.b64encode(text_pdf(list(pages))).decode()


def test_a_resent_pdf_is_not_read_again_and_the_oldest_is_let_go(monkeypatch):
    reads = []
    real = pypdf.PdfReader

    def counting(stream, *args, **kwargs):
        reads.append(1)
        return real(stream, *args, **kwargs)

    monkeypatch.setattr(pypdf, "PdfReader", counting)
    monkeypatch.setattr(pdf_text, "KEPT", 2)
    monkeypatch.setattr(pdf_text, "_TEXTS", type(pdf_text._TEXTS)())
    first = pdf_text.pdf_text(encoded("one"), "m")
    assert pdf_text.pdf_text(encoded("one"), "m") == first == "--- page 1 ---\none"
    assert len(reads) == 1
    pdf_text.pdf_text(encoded("two"), "m")
    pdf_text.pdf_text(encoded("one"), "m")  # the newest again: "two" is now the oldest
    pdf_text.pdf_text(encoded("three"), "m")  # past KEPT: "two" goes
    assert len(reads) == 3
    pdf_text.pdf_text(encoded("one"), "m")
    pdf_text.pdf_text(encoded("two"), "m")
    assert len(reads) == 4
