"""The one port: HTTP routes and the WebSocket protocols, on one Twisted Site.

``site`` builds the Site: the Klein app of ``app`` (the recordings API, downloads, the page's
routes, the WebSocket upgrade at ``/``) behind ``utf8only`` (a URL that is not UTF-8 is a 400),
with ``accesslog`` writing the access log without tokens. ``guard`` checks a route's token;
``answers`` gives every JSON answer and error its shape; ``mediafile`` serves a file of the
media tree and ``objectfile`` an object of the bucket. ``protocol`` is the recording WebSocket
(messages in, replies and close codes out); ``live`` the viewer WebSocket; ``page`` the web
page's files; ``bodies`` and ``deadline`` bound what a request may cost.

The top of the data flow: may import every package but ``daemon`` and ``cli``.
"""
