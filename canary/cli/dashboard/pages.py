"""The dashboard's HTML: two small shells (the list of Canaries, one Canary's page) that load
the one script and the one style sheet of the package; every datum reaches the page later as
JSON and goes into it through `textContent` (static/app.js). What the shells themselves carry
(the context, the namespace, the key of the Canary) is escaped here. The security headers every
answer carries are here too."""

from __future__ import annotations

import html
import json
from importlib import resources

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
"""No inline script or style, nothing from elsewhere: a string that got into the page as markup
after all could still not run."""

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

STATIC = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


def static(name: str) -> bytes | None:
    """A file of the package's static/ directory (only the known ones)."""
    if name not in STATIC:
        return None
    return resources.files("canary.cli.dashboard").joinpath("static", name).read_bytes()


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(kind: str, *, context: str, scope: str, key: str = "", token: str = "") -> str:
    """The shell of the list page (`kind` "list") or of one Canary's page ("canary", `key`
    "namespace/name"). `token` (only with --allow-actions) is what the action requests send."""
    if kind not in ("list", "canary"):
        raise ValueError(kind)
    title = f"{key} · canary dashboard" if kind == "canary" else "canary dashboard"
    meta = f'<meta name="canary-token" content="{e(token)}">\n' if token else ""
    back = '<a class="back" href="/">all canaries</a>' if kind == "canary" else ""
    mode = "actions allowed" if token else "read-only"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
{meta}<title>{e(title)}</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header>
<h1><a href="/">canary</a> dashboard</h1>
<span class="scope">{e(scope)}</span>
<span class="context">context {e(context or "-")}</span>
<span class="mode">{e(mode)}</span>
<span id="conn" class="conn">connecting…</span>
{back}
</header>
<div id="errors" class="errors"></div>
<main id="app" data-page="{e(kind)}" data-key="{e(key)}"></main>
<noscript>The dashboard needs JavaScript (it follows the Canaries live).</noscript>
</body>
</html>
"""


def json_bytes(data: object) -> bytes:
    return json.dumps(data).encode()
