"""Serves the board's pages and the charting library.

The pages are static files; they carry no data and read everything from the API with the user's key
(kept in the browser's localStorage, taken from the URL fragment ``#key=...`` that the demo prints, so
the key never reaches a server log). Charts use the plotly.js that the installed ``plotly`` Python
package ships, served from here: no CDN, works without internet access.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"
PAGES = {"board", "downtime", "jit", "risk"}

router = APIRouter(include_in_schema=False)


def _plotly_js() -> Path:
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.exists():  # pragma: no cover - a broken plotly install
        raise HTTPException(500, "plotly.min.js is missing from the installed plotly package")
    return path


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/board")


@router.get("/vendor/plotly.min.js")
def plotly_js() -> FileResponse:
    return FileResponse(_plotly_js(), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/{page}")
def page(page: str) -> FileResponse:
    if page not in PAGES:
        raise HTTPException(404, f"no page {page!r}")
    return FileResponse(STATIC / f"{page}.html", media_type="text/html")


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)
