"""The front door in the app: client authentication, access rules, the token endpoint, limits.

Built from ``[auth]`` and ``[rate_limit]`` (:mod:`mirror.config_security`);
without them nothing here runs and the mirror answers everyone, as before.
The parts live in :mod:`mirror.security`; this module only says, for each
request of this app, what it is about:

- a repository endpoint (``manifest``, ``blob``, ``tags``, ``referrers``):
  the upstream and repository the :class:`mirror.routing.Router` resolves it
  to, so the rules and the token grants see the same names whatever spelling
  (``?ns=``, a path prefix, ``library/``) the client used;
- the admin API, every path under ``/admin/`` (so an admin route added later
  is one too): :attr:`Area.ADMIN` (its static ``admin.token``, or an
  identity the rules give ``admin``);
- the web UI, every path under ``/ui``: :attr:`Area.UI` (any login, with a
  ``Basic`` challenge a browser can answer; admins are those the rules give
  ``admin``, see :func:`ui_viewer`);
- ``/healthz``, ``/readyz``, ``/metrics``, the token endpoint, and paths no
  route matches (404): public;
- anything else (``/v2/``, ``_catalog``, pushes, paths under ``/v2`` that name
  no endpoint, and any page added later): :attr:`Area.BASE`, a valid
  credential or the challenge. New routes are gated unless listed here.

Middlewares, outermost first: ``oci_errors`` (the app's), ``client_auth``,
``rate_limit``; the rate limit runs after authentication so that a user is
counted by name wherever it pulls from.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from mirror.config import Config
from mirror.config_security import AuthConfig
from mirror.metrics import Metrics
from mirror.routes.keys import ROUTER
from mirror.routes.v2 import routed
from mirror.routing import Target
from mirror.security.challenge import TOKEN_PATH
from mirror.security.gate import CALLER, Area, ClientGate, Pull, Resource, rate_limit_middleware
from mirror.security.htpasswd import Htpasswd
from mirror.security.keys import load_or_create_signing_key
from mirror.security.limits import LoginThrottle, RateLimiter
from mirror.security.token_endpoint import TokenEndpoint
from mirror.security.tokens import TokenAuthority
from mirror.ui.keys import ViewerLookup
from mirror.ui.model import Viewer
from mirror.ui.viewers import admin_token_viewer

# Named routes of mirror.routes.v2.
_REPOSITORY_ROUTES = frozenset({"manifest", "blob", "tags", "referrers"})
_ADMIN_PREFIX = "/admin/"
_UI_PREFIX = "/ui/"
# Probes and Prometheus have no login; the token endpoint checks its own credentials.
_PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", TOKEN_PATH})


def pull_of(target: Target) -> Pull:
    """The gate's name for a routed request: the upstream's name and the repository there."""
    return Pull(target.upstream.name, target.repository)


def classify(request: web.Request) -> Resource:
    """What ``request`` is about, for :class:`ClientGate` (see the module docstring)."""
    info = request.match_info
    route = info.route.name
    if route in _REPOSITORY_ROUTES:
        return pull_of(routed(request))
    if request.path.startswith(_ADMIN_PREFIX) or request.path == _ADMIN_PREFIX.rstrip("/"):
        return Area.ADMIN
    if request.path.startswith(_UI_PREFIX) or request.path == _UI_PREFIX.rstrip("/"):
        return Area.UI
    if request.path in _PUBLIC_PATHS or info.http_exception is not None:
        return None
    return Area.BASE


def _rate_limited(request: web.Request) -> bool:
    # The registry API and logins count; health probes and metrics scrapes do not.
    return request.path.startswith("/v2") or request.path == TOKEN_PATH


def grants_admin(auth: AuthConfig | None) -> bool:
    """Whether a rule can give an identity the admin API (then it is served without a token)."""
    return auth is not None and any(r.allow and "admin" in r.actions for r in auth.rules)


def build_gate(config: Config, metrics: Metrics) -> ClientGate | None:
    """The gate for ``[auth]`` (None without it); reads the htpasswd file and the token key."""
    auth = config.security.auth
    if auth is None:
        return None
    users = Htpasswd(auth.htpasswd) if auth.htpasswd is not None else None
    tokens = None
    if auth.token is not None:
        tokens = TokenAuthority(load_or_create_signing_key(auth.token.key), auth.token)
    return ClientGate(
        auth, users=users, tokens=tokens, throttle=LoginThrottle(), events=metrics,
        admin_token=config.admin_token,
    )  # fmt: skip


def ui_viewer(gate: ClientGate | None, admin_token: str | None) -> ViewerLookup:
    """Who looks at the web UI: the admin token's holder and users the rules make admins
    may purge and pin; any other login (or anyone, without ``[auth]``) may look."""
    by_token = admin_token_viewer(admin_token)
    if gate is None:
        return by_token

    def lookup(request: web.Request) -> Viewer:
        viewer = by_token(request)
        caller = request.get(CALLER)
        if viewer.can_admin or caller is None or caller.user is None:
            return viewer
        return Viewer(caller.user, can_admin=gate.is_admin(caller))

    return lookup


def install(
    app: web.Application, config: Config, metrics: Metrics, gate: ClientGate | None
) -> list[Middleware]:
    """Add the token endpoint to ``app`` when token auth is on; the middlewares to use.

    ``gate``: :func:`build_gate`'s, None without ``[auth]``.
    """
    middlewares: list[Middleware] = []
    if gate is not None:
        middlewares.append(gate.middleware(classify))
        if gate.tokens is not None:

            def resolve(name: str) -> Pull:
                return pull_of(app[ROUTER].resolve(name, None))

            TokenEndpoint(gate, gate.tokens, resolve).register(app)
    limit = config.security.rate_limit
    if limit is not None:
        limiter = RateLimiter(limit.rate, limit.burst, limit.max_clients)
        middlewares.append(rate_limit_middleware(limiter, metrics, _rate_limited))
    return middlewares
