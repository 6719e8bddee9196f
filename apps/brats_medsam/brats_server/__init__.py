"""The HTTP front of the brats-medsam MONAI Label app: what MONAI Label 0.8.5 leaves open, closed here.

``asgi.app`` is MONAI Label's FastAPI app with: an endpoint table (unknown routes 404, a role per route),
OIDC bearer-token checks (RS256 from the issuer's keys), CORS limited to listed origins, a body-size limit,
request validation before work is queued, inference on a bounded worker pool off the event loop, sessions off
unless asked for and then extracted safely. ``serve`` starts it; nothing here is imported by the core package.
"""
