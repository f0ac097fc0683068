"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc` (ReDoc), served
entirely by this server.

FastAPI's own pages load Swagger UI and ReDoc from a CDN: they fail on a network without
one, and they run third-party code next to a bearer token someone pastes in. Here both
UIs come from the `fastapi-offline` package, installed with giftcard, and each page
starts its UI from a script file of ours, so that its Content-Security-Policy allows
scripts from this server only, and nothing inline; styles too, but for what ReDoc
writes as it loads (see `REDOC_STYLE_HASHES`).
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
VENDOR_PATH = "/docs/vendor"
ASSETS_PATH = "/docs/assets"

# Scripts, styles and fonts from this server only; the UIs fetch the OpenAPI document
# (and Swagger UI's "Try it out" its requests) from here too.
_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'{styles}; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'{workers}"
)
# ReDoc's bundle writes two `<style>` elements as it loads: the scroll bar's styles, and
# an empty sheet into which it then inserts every rule it renders with (through the
# CSSOM, which a policy does not govern). Their hashes allow exactly those two contents;
# a style written into the page, or a `style` attribute, is still refused. A new version
# of the bundle with other contents shows up as a refused style in the browser test.
REDOC_STYLE_HASHES = (
    "sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc=",  # perfect-scrollbar's CSS
    "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",  # the empty string
)
SWAGGER_POLICY = _POLICY.format(styles="", workers="")
# ReDoc's search runs in a web worker made from a blob of ReDoc's own code: a blob
# worker can only be started by a script already running, and scripts come only from
# this server.
REDOC_POLICY = _POLICY.format(
    styles="".join(f" '{source}'" for source in REDOC_STYLE_HASHES),
    workers="; worker-src blob:",
)


def _headers(policy: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": policy,
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }


_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{vendor}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{vendor}/swagger-ui-bundle.js"></script>
<script src="{assets}/swagger-init.js"></script>
</body>
</html>
"""

_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
</head>
<body>
<div id="redoc" data-openapi-url="{openapi_url}"></div>
<script src="{vendor}/redoc.standalone.js"></script>
<script src="{assets}/redoc-init.js"></script>
</body>
</html>
"""


def install(app: FastAPI) -> None:
    """Serve /docs and /redoc for `app`, which must be built with `docs_url=None` and
    `redoc_url=None` so that FastAPI's CDN-loading pages are not there."""
    openapi_url = app.openapi_url
    if openapi_url is None or app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("build the app with an openapi_url and without FastAPI's docs pages")
    app.mount(
        VENDOR_PATH, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-vendor"
    )
    app.mount(ASSETS_PATH, StaticFiles(packages=[("giftcard.api", "docs_assets")]), name="docs")
    fields = {"openapi_url": escape(openapi_url), "vendor": VENDOR_PATH, "assets": ASSETS_PATH}
    swagger = _SWAGGER_PAGE.format(title=escape(f"{app.title} API - Swagger UI"), **fields)
    redoc = _REDOC_PAGE.format(title=escape(f"{app.title} API - ReDoc"), **fields)

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(swagger, headers=_headers(SWAGGER_POLICY))

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return HTMLResponse(redoc, headers=_headers(REDOC_POLICY))
