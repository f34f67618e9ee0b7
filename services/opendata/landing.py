"""The landing page (`GET /`): what is published, with sizes, dates and checksums, and the archive.

Built from the folder on each request: the latest manifest (`index.json`), the kit's documents and the
archived manifests (`index-<stamp>.json`) of the publications still kept. No data is read.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from services.opendata import kit
from services.opendata.files import INDEX_NAME

_ARCHIVED_INDEX = re.compile(r"^index-(\d{4}-\d{2}-\d{2}-\d{2}h\d{2})\.json$")
_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:72rem;
padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid #ddd;vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,.sha{font-family:ui-monospace,monospace;font-size:.8rem;word-break:break-all}
.muted{color:#555}details{margin:.3rem 0}
"""


def _load(path: Path) -> dict[str, Any] | None:
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return document


def _modified(path: Path) -> str:
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return "—"
    return datetime.fromtimestamp(int(mtime), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(n: int) -> str:
    for unit, scale in (("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n} bytes"


def _link(name: str) -> str:
    return f'<a href="{escape(name)}"><code>{escape(name)}</code></a>'


def _files_table(directory: Path, entries: list[dict[str, Any]], *, latest: bool) -> str:
    head = ("<tr><th>file</th><th>rows</th><th>size</th><th>last modified</th><th>SHA-256</th></tr>")
    rows = []
    for e in entries:
        name = e["latest"] if latest else e["name"]
        also = f'<br><span class="muted">same bytes as {_link(e["name"])}</span>' if latest else ""
        rows.append(
            f"<tr><td>{_link(name)}{also}</td><td class=n>{e['rows']:,}</td>"
            f"<td class=n>{_size(e['bytes'])}</td>"
            f"<td>{_modified(directory / name)}</td><td class=sha>{escape(e['sha256'])}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def landing_page(directory: Path) -> str:
    index = _load(directory / INDEX_NAME)
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        "<title>LabFlow — SI-DEP open data</title>"
        f"<style>{_STYLE}</style></head><body>",
        "<h1>SI-DEP open data: people tested and positive for SARS-CoV-2</h1>",
        "<p>Daily files in the format of Santé publique France's SI-DEP open data (<code>;</code>-separated "
        "UTF-8 CSV, ISO days, codes as strings): existing scripts load them unchanged. Aggregate counts "
        f"only. Data dictionary, counting rule and update schedule: {_link(kit.README_NAME)}. Licence: "
        f'<a href="{kit.LICENCE_URL}">{escape(kit.LICENCE_NAME)}</a> ({_link(kit.LICENCE_FILE)}).</p>',
    ]
    if index is None:
        parts.append("<p><strong>Nothing published yet.</strong></p></body></html>")
        return "".join(parts)
    parts += [
        f"<p>Latest publication <strong>{escape(str(index['publication']))}</strong>, generated "
        f"{escape(str(index['generated_at']))}; collection days <strong>{escape(str(index['first_day']))}"
        f" → {escape(str(index['data_cut_off']))}</strong> (data cut-off; the last "
        f"{kit.PROVISIONAL_DAYS} days are provisional). Manifest: {_link(INDEX_NAME)}.</p>",
        "<h2>Latest files (stable names)</h2>",
        _files_table(directory, index.get("files", []), latest=True),
    ]
    corrected = index.get("corrected_days")
    if corrected:
        shown = ", ".join(escape(d) for d in corrected[:20]) + (" …" if len(corrected) > 20 else "")
        parts.append(f"<p>Past days changed since the previous publication: {shown} "
                     f"(details in {_link(kit.CHANGELOG_NAME)}).</p>")
    elif corrected is not None:
        parts.append("<p>No past day changed since the previous publication "
                     f"({_link(kit.CHANGELOG_NAME)}).</p>")
    documents = index.get("documents", [])
    if documents:
        rows = "".join(
            f"<tr><td>{_link(d['name'])}</td><td class=n>{_size(d['bytes'])}</td>"
            f"<td>{_modified(directory / d['name'])}</td><td class=sha>{escape(d['sha256'])}</td></tr>"
            for d in documents
        )
        parts += [
            "<h2>Documentation and metadata</h2>",
            "<p>Frictionless Data Package (<code>datapackage.json</code>) and a Table Schema per file, "
            "data dictionary, licence, changelog of corrected days.</p>",
            f"<table><tr><th>file</th><th>size</th><th>last modified</th><th>SHA-256</th></tr>{rows}</table>",
        ]
    archived = sorted(
        (m.group(1), p) for p in directory.iterdir() if (m := _ARCHIVED_INDEX.match(p.name))
    )
    parts.append(f"<h2>Archive: publications kept ({len(archived)})</h2>")
    parts.append("<p>Each publication carries the whole history; its files keep their timestamped "
                 "names and their manifest <code>index-&lt;publication&gt;.json</code>.</p>")
    for stamp, path in reversed(archived):
        manifest = _load(path)
        if manifest is None:
            continue
        summary = (f"{escape(stamp)} — generated {escape(str(manifest.get('generated_at')))}, days "
                   f"{escape(str(manifest.get('first_day')))} → {escape(str(manifest.get('data_cut_off')))}")
        parts.append(f"<details><summary>{summary} ({_link(path.name)})</summary>"
                     f"{_files_table(directory, manifest.get('files', []), latest=False)}</details>")
    parts.append("</body></html>")
    return "".join(parts)
