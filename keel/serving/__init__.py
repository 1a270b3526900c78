"""Serving the champion: the HTTP server with its alias watcher (``server``), the shadow
challenger (``shadow``) and batch scoring (``batch``). Never: trains, ingests or moves aliases."""
