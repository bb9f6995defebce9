"""The output folder of an image explanation, written atomically (a failure leaves nothing).

Contents::

    explanations.parquet / .csv   one row per image: row id, source, predicted and explained
                                  class, the explained probability, baseline, the attributions'
                                  sum (additivity error), and the two files below
    overlays/row<ID>.png          the heatmap over the image (enlarged when small)
    attributions/row<ID>.npy      the raw attributions, float32: (height, width) for Grad-CAM
                                  and LIME, (height, width, channels) for gradient and SHAP
    grid.png                      the first images and their overlays in one figure
    summary.json                  the figures ``--json`` prints
    index.html                    all of the above on one page
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from deepspark._atomic import folder_replacement
from deepspark.explain.images import overlay as drawing
from deepspark.explain.images.explanation import ImageExplanation

OVERLAYS = "overlays"
ATTRIBUTIONS = "attributions"
_PAGE_IMAGES = 200
_TABLE_PREVIEW_ROWS = 50


def write_image_report(
    explanation: ImageExplanation,
    directory: str | Path,
    *,
    summary: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, str]:
    """Write overlays, raw attributions, tables, the grid, ``summary.json`` and ``index.html``.

    Returns:
        Output name -> final path (``index_html``, ``explanations_parquet``, ``overlays``...).
    """
    from deepspark.explain.report import check_output_dir

    directory = check_output_dir(directory, overwrite=overwrite).absolute()
    with folder_replacement(directory) as staging:
        names = _write_contents(explanation, staging, summary)
    return {key: str(directory / name) for key, name in names.items()}


def image_file_names(row_id: int) -> tuple[str, str]:
    """The overlay and attribution file of one image, relative to the folder."""
    return f"{OVERLAYS}/row{row_id}.png", f"{ATTRIBUTIONS}/row{row_id}.npy"


def _write_contents(explanation: ImageExplanation, folder: Path, summary: dict) -> dict[str, str]:
    (folder / OVERLAYS).mkdir()
    (folder / ATTRIBUTIONS).mkdir()
    heatmaps = explanation.heatmaps()
    signed = drawing.is_signed(heatmaps)
    files = [image_file_names(int(row_id)) for row_id in explanation.row_ids]
    for position, (overlay_name, array_name) in enumerate(files):
        np.save(folder / array_name, np.asarray(explanation.attributions[position], np.float32))
        picture = drawing.overlay(explanation.images[position], heatmaps[position], signed=signed)
        drawing.save_png(folder / overlay_name, drawing.enlarged(picture))
    table = explanation.table()
    table["overlay"] = [overlay_name for overlay_name, _ in files]
    table["attributions"] = [array_name for _, array_name in files]
    table.to_parquet(folder / "explanations.parquet", index=False)
    table.to_csv(folder / "explanations.csv", index=False)
    names = {
        "explanations_parquet": "explanations.parquet",
        "explanations_csv": "explanations.csv",
        "overlays": OVERLAYS,
        "attributions": ATTRIBUTIONS,
    }
    if len(explanation):
        drawing.grid_figure(explanation, folder / "grid.png")
        names["grid_png"] = "grid.png"
    names["summary_json"] = "summary.json"
    names["index_html"] = "index.html"
    document = {**summary, "outputs": sorted(names.values())}
    (folder / "summary.json").write_text(json.dumps(document, indent=1, default=str))
    (folder / "index.html").write_text(_html(explanation, summary, table, "grid_png" in names))
    return names


def _html(explanation: ImageExplanation, summary: dict, table, has_grid: bool) -> str:
    facts = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in summary.items()
        if not isinstance(value, dict | list)
    )
    figures = "".join(
        f'<figure><img src="{html.escape(row.overlay)}" alt="row {row.row_id}">'
        f"<figcaption>row {row.row_id}: {html.escape(_name(row.source))}<br>"
        f"explained {html.escape(row.explained_class)} ({row.prediction:.3f}), "
        f"predicted {html.escape(row.predicted_class)}<br>"
        f'<a href="{html.escape(row.attributions)}">attributions</a></figcaption></figure>'
        for row in table.head(_PAGE_IMAGES).itertuples()
    )
    grid = '<h2>Overview</h2><img src="grid.png" alt="grid">' if has_grid else ""
    preview = table.head(_TABLE_PREVIEW_ROWS).to_html(index=False, float_format="{:.5g}".format)
    title = f"deepspark image explanation ({html.escape(explanation.method)})"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top;font-size:12px}}
figure img{{width:192px;image-rendering:pixelated}}img{{max-width:1280px}}
</style></head><body>
<h1>{title}</h1>
<table>{facts}</table>
{grid}
<h2>Images (first {_PAGE_IMAGES}; all in explanations.csv / .parquet)</h2>{figures}
<h2>Table (first {_TABLE_PREVIEW_ROWS} rows)</h2>
{preview}
</body></html>
"""


def _name(source) -> str:
    return Path(source).name if isinstance(source, str) else "(bytes)"
