"""The text of a PDF sent as an Anthropic `document` block (what Claude Code's `Read` sends for a
`.pdf`), read with pypdf, page by page.

A session resends its PDF every turn, so the text of recent PDFs is kept by digest: a follow-up
reads none again, and its prompt is the same text token for token (the prefix cache holds). A
payload that is too large, not base64, not a PDF, encrypted or past the page limit is a 400
naming its block. A PDF with no text layer (scanned pages) reads as a note saying so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import logging
import threading
from collections import OrderedDict

from server.errors import BadRequest

MAX_PDF_BYTES = 32 * 1024 * 1024  # Anthropic's own limit on a request with PDFs
MAX_PAGES = 100  # Anthropic's own limit per request
KEPT = 32  # recent PDFs' texts (a few MB at most: text, not pages)
PDF_MEDIA = "application/pdf"

_TEXTS: OrderedDict[str, str] = OrderedDict()
_LOCK = threading.Lock()


def pdf_text(data: object, where: str) -> str:
    """The text of a base64 PDF, pages marked; a 400 naming `where` when it cannot be read."""
    raw = _decode(data, where)
    digest = hashlib.sha256(raw).hexdigest()
    with _LOCK:
        if digest in _TEXTS:
            _TEXTS.move_to_end(digest)
            return _TEXTS[digest]
    text = _read(raw, where)
    with _LOCK:
        _TEXTS[digest] = text
        while len(_TEXTS) > KEPT:
            _TEXTS.popitem(last=False)
    return text


def pdf_data_url(url: str, where: str) -> str:
    """The text of a `data:application/pdf;base64,...` URL's PDF (OpenAI's inline files)."""
    head, _, payload = url.partition(",")
    if head != f"data:{PDF_MEDIA};base64":
        raise BadRequest(f"{where}: a file's data must be a base64 PDF data URL ({head[:40]}...)")
    return pdf_text(payload, where)


def is_pdf_data_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(f"data:{PDF_MEDIA}")


def _decode(data: object, where: str) -> bytes:
    if not isinstance(data, str) or not data:
        raise BadRequest(f"{where}.source.data: the PDF has no data")
    if len(data) > MAX_PDF_BYTES * 4 // 3 + 4:  # refuse a huge one before decoding it
        raise BadRequest(f"{where}: the PDF exceeds {MAX_PDF_BYTES // (1024 * 1024)} MB")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}.source.data: the PDF data is not valid base64") from None


def _read(raw: bytes, where: str) -> str:
    from pypdf import PdfReader

    if b"%PDF-" not in raw[:1024]:  # readers allow bytes before the header, up to 1 KB
        raise BadRequest(f"{where}: the document is not a PDF (no %PDF- header)")
    logging.getLogger("pypdf").setLevel(logging.ERROR)  # a damaged file's repairs: not news
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise BadRequest(f"{where}: the PDF is encrypted (send it without a password)")
        count = len(reader.pages)
        if count > MAX_PAGES:
            raise BadRequest(f"{where}: the PDF has {count} pages (at most {MAX_PAGES})")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except BadRequest:
        raise
    except Exception as exc:  # pypdf raises many kinds for a damaged file
        raise BadRequest(f"{where}: the PDF could not be read ({exc})") from None
    if not any(pages):
        return f"[a PDF of {count} pages with no text layer (scanned?): its text cannot be read]"
    return "\n\n".join(f"--- page {i} ---\n{text}" for i, text in enumerate(pages, 1))
