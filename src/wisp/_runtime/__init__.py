"""Code that runs inside a container: load the user's module, build the ASGI app, serve it."""
