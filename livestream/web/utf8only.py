"""Answers a URL whose host or path is not UTF-8 before Klein routes it.

Klein decodes both as UTF-8 to match its routes, and answers what does not decode with a plain
text error and a traceback in the log. No route could match such a URL, so it is a bad request
like any other: a JSON 400 from here, and nothing logged as a failure.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Request

from livestream.web.answers import error_answer


class Utf8Only(Resource):
    """``app``, the Klein app's resource, behind the check: a request whose URL decodes is
    handed to it whole."""

    isLeaf = True

    def __init__(self, app: Resource) -> None:
        super().__init__()
        self._app = app

    def render(self, request: Request) -> bytes | int:
        # The Site sets both paths when it looks up the resource, before any renders.
        if request.prepath is None or request.postpath is None:
            raise RuntimeError("a request reached Utf8Only without the paths a Site sets")
        try:
            request.getRequestHostname().decode("utf-8")
            b"/".join(request.prepath + request.postpath).decode("utf-8")
        except UnicodeDecodeError:
            return error_answer(request, 400, "bad_url", "the host or path of the URL is not UTF-8")
        return self._app.render(request)
