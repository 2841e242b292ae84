"""Pacing requests to what the API allows: the middleware, routing among keys, what the
server's answers do (feedback), its headers read, pacing (pure), learning (pure), backends."""
