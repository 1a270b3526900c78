"""Who is acting on the registry. On an MLflow tracking server that runs the basic-auth app
(``mlflow server --app-name basic-auth``; ``keel up --auth``), the actor is the user the
server authenticates from MLflow's own ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``,
never a flag; elsewhere (the embedded sqlite store, a server without auth) it is the name
given or the OS user, and recorded as unauthenticated. ``[promotion] reviewers`` lists who
may move ``champion``.

Reads the environment and asks the server; stores no password, moves nothing.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass

from keel.config.settings import MlflowStore, PromotionConfig


@dataclass(frozen=True)
class Actor:
    name: str
    authenticated: bool  # the tracking server checked the credentials

    def label(self) -> str:
        return self.name if self.authenticated else f"{self.name} (unauthenticated)"

    def to_json(self) -> dict[str, object]:
        return {"user": self.name, "authenticated": self.authenticated}


def _auth_status(uri: str, user: str, password: str) -> int:
    """The basic-auth app's answer to "who am I": 200 (credentials valid), 401/403, or 404
    (the server runs no auth app)."""
    import base64
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{uri.rstrip('/')}/api/2.0/mlflow/users/get?{urllib.parse.urlencode({'username': user})}"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def current_actor(store: MlflowStore, claimed: str | None = None) -> Actor:
    """The authenticated user when the tracking server can tell; else ``claimed`` or the OS user.
    A claimed name that differs from the authenticated one is refused."""
    from keel.errors import PromotionError

    uri = store.mlflow.tracking_uri
    user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if uri.startswith(("http://", "https://")) and user:
        status = _auth_status(uri, user, os.environ.get("MLFLOW_TRACKING_PASSWORD", ""))
        if status == 200:
            if claimed and claimed != user:
                raise PromotionError(
                    f"the MLflow server at {uri} authenticated you as {user!r}, not {claimed!r}: "
                    f"on an authenticated server the actor is the authenticated user"
                )
            return Actor(user, True)
        if status in (401, 403):
            raise PromotionError(
                f"the MLflow server at {uri} rejected the credentials of {user!r} "
                f"(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)"
            )
    return Actor(claimed or getpass.getuser(), False)


def require_reviewer(promotion: PromotionConfig, actor: Actor, what: str) -> None:
    """Refuse a champion move by anyone not in ``[promotion] reviewers`` (empty: anyone)."""
    from keel.errors import PromotionError

    allowed = promotion.reviewers
    if allowed and actor.name not in allowed:
        raise PromotionError(
            f"{actor.label()} may not {what}: only [promotion] reviewers = {allowed} may move 'champion'; "
            f"champion unchanged"
        )


def authenticated_store(store: MlflowStore) -> bool:
    """Whether champion moves here carry an authenticated identity."""
    from keel.errors import PromotionError

    try:
        return current_actor(store).authenticated
    except PromotionError:  # credentials the server rejects authenticate no one
        return False
