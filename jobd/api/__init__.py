"""The HTTP API: a WSGI application (app.py, views.py) over the operations layer,
served by cheroot (server.py).

Only `jobd serve` and a `jobd run` whose config has an `[api]` table import
this package; everything else never loads the web stack.
"""
