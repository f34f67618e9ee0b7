"""`/docs`: the HTTP intake's OpenAPI description as a Swagger UI page, served offline.

The page's script and style come from the npm package `swagger-ui-dist`, copied into `static/vendor`
by `make install` (like the dashboard's uPlot): no CDN, so the page works on an isolated network and a
lab's browser fetches nothing from a third party.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

VENDOR = Path(__file__).parent / "static" / "vendor"


def add_docs(app: FastAPI) -> None:
    app.mount("/docs/vendor", StaticFiles(directory=VENDOR, check_dir=False), name="docs-vendor")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url="/docs/vendor/swagger-ui-bundle.js",
            swagger_css_url="/docs/vendor/swagger-ui.css",
            swagger_favicon_url="/docs/vendor/favicon-32x32.png",
        )
