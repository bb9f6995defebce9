"""The output folder of an explanation, written atomically: a failure leaves nothing behind.

Contents::

    attributions.parquet / .csv    row id, prediction, baseline, (explained class), one column
                                   per raw feature
    importance.png                 mean |attribution| per feature
    beeswarm.png                   every row's attributions, coloured by feature value
    waterfall_row<ID>.png          baseline -> prediction for the first rows (additive methods)
    lime_row<ID>.png               LIME's conditions for the first rows (method lime)
    summary.json                   the figures ``--json`` prints
    index.html                     all of the above on one page
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from deepspark._atomic import folder_replacement
from deepspark.errors import UserInputError
from deepspark.explain import plots
from deepspark.explain.base import Explanation

WATERFALL_ROWS = 3
_TABLE_PREVIEW_ROWS = 20


def check_output_dir(directory: str | Path, *, overwrite: bool) -> Path:
    """Validate the output folder before any work is done.

    Raises:
        UserInputError: A non-empty folder without ``overwrite``, a file in the way, or a
            missing parent folder.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserInputError(
            f"Output must be a folder, and a file of that name exists; choose another --output. "
            f"Received: output={str(directory)!r}"
        )
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise UserInputError(
            f"Output folder exists and is not empty; pass --overwrite to replace it or choose "
            f"another --output. Received: output={str(directory)!r}"
        )
    if not directory.absolute().parent.is_dir():
        raise UserInputError(
            f"The output's parent folder does not exist; create it first. "
            f"Received: output={str(directory)!r}"
        )
    return directory


def write_report(
    explanation: Explanation,
    directory: str | Path,
    *,
    summary: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, str]:
    """Write tables, plots, ``summary.json`` and ``index.html`` into ``directory``.

    Everything is written into a temporary sibling folder that replaces ``directory`` at the end.

    Returns:
        Output name -> final path (``index_html``, ``attributions_parquet``, ...).
    """
    directory = check_output_dir(directory, overwrite=overwrite).absolute()
    with folder_replacement(directory) as staging:
        names = _write_contents(explanation, staging, summary)
    return {key: str(directory / name) for key, name in names.items()}


def _write_contents(explanation: Explanation, folder: Path, summary: dict) -> dict[str, str]:
    table = explanation.table()
    table.to_parquet(folder / "attributions.parquet", index=False)
    table.to_csv(folder / "attributions.csv", index=False)
    names = {"attributions_parquet": "attributions.parquet", "attributions_csv": "attributions.csv"}
    images: list[tuple[str, str]] = []
    if len(explanation):
        plots.importance_bar(explanation, folder / "importance.png")
        plots.beeswarm(explanation, folder / "beeswarm.png")
        images += [("Global importance", "importance.png"), ("Summary", "beeswarm.png")]
        # A waterfall walks from the baseline to the prediction: only additive methods do.
        waterfall_rows = WATERFALL_ROWS if explanation.additive else 0
        for position in range(min(waterfall_rows, len(explanation))):
            row_id = int(explanation.row_ids[position])
            name = f"waterfall_row{row_id}.png"
            plots.waterfall(explanation, position, folder / name)
            images.append((f"Row {row_id}", name))
    for row_id, conditions in sorted(explanation.details.get("lime_conditions", {}).items()):
        name = f"lime_row{row_id}.png"
        plots.lime_bars(conditions, row_id, folder / name)
        images.append((f"LIME, row {row_id}", name))
    names.update({Path(name).stem: name for _, name in images})
    names["summary_json"] = "summary.json"
    names["index_html"] = "index.html"
    document = {**summary, "outputs": sorted(names.values())}
    (folder / "summary.json").write_text(json.dumps(document, indent=1, default=str))
    (folder / "index.html").write_text(_html(explanation, summary, images, table))
    return names


def _html(explanation: Explanation, summary: dict, images, table) -> str:
    facts = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in summary.items()
        if not isinstance(value, dict | list)
    )
    figures = "".join(
        f'<figure><img src="{html.escape(name)}" alt="{html.escape(title)}">'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
        for title, name in images
    )
    preview = table.head(_TABLE_PREVIEW_ROWS).to_html(index=False, float_format="{:.5g}".format)
    title = f"deepspark explanation ({html.escape(explanation.method)})"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
figure{{display:inline-block;margin:0 1em 1em 0;vertical-align:top}}img{{max-width:520px}}
</style></head><body>
<h1>{title}</h1>
<table>{facts}</table>
<h2>Plots</h2>{figures}
<h2>Attributions (first {_TABLE_PREVIEW_ROWS} rows; all in attributions.csv / .parquet)</h2>
{preview}
</body></html>
"""
