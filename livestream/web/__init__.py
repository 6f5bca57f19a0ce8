"""The one port: HTTP routes and the WebSocket protocols, on one Twisted Site.

``app`` is the Klein app (the recordings API, downloads, the page's routes) and the site;
``protocol`` the recording WebSocket (messages in, replies and close codes out); ``live`` the
viewer WebSocket; ``page`` the web page's files; ``objectfile`` serves an object of the
bucket; ``bodies`` and ``deadline`` bound what a request may cost.

The top of the data flow: may import every package but ``daemon`` and ``cli``.
"""
