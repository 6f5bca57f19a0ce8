"""How the HTTP API answers in JSON: a document, or an error in the one shape every error has.

A program reads a failure as it reads a success: ``application/json``, never cached (a listing
changes as recordings finish, and an error is about this request only), and every error, from a
route, the token guard or an error handler, is ``{"error": code, "message": text}``.
"""

from __future__ import annotations

import json

from twisted.web.server import Request


def json_answer(request: Request, status: int, document: object) -> bytes:
    """``document`` as the body of a ``status`` answer that no cache keeps."""
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    request.setHeader("cache-control", "no-store")
    return json.dumps(document).encode("utf-8")


def error_answer(request: Request, status: int, code: str, message: str) -> bytes:
    """An error: ``code`` for programs to test, ``message`` for people to read."""
    return json_answer(request, status, {"error": code, "message": message})


def no_such_recording(request: Request) -> bytes:
    """The 404 of a recording's URL, whether the name is not one a recording can have or no
    recording has it: a client cannot tell the two apart."""
    return error_answer(request, 404, "not_found", "no such recording")
