"""Warming a model before ``/ping`` says ready: one predict per batch size it will see.

The example rows come from the model's input signature, whatever the model's kind: numbers are
0, text is missing, bytes are a small encoded image. They go the way requests go (``conform``,
then one frame per batch). On JAX, ``deepspark.runtime.forward`` pads each chunk to a power of
two (at least 16 rows), so scoring 1, 16, 32 ... ``max_batch_rows`` rows compiles every size a
batch can take.
"""

from __future__ import annotations

import io
import logging
import time

from deepspark.serving.rows import NUMERIC_TYPES, InputColumn, Rows, conform

logger = logging.getLogger(__name__)


def example_rows(columns: tuple[InputColumn, ...], count: int = 1) -> Rows:
    """``count`` rows that every input column accepts."""
    table = {}
    for column in columns:
        if column.type in NUMERIC_TYPES:
            value = 0.0
        elif column.type == "binary":
            value = _tiny_image()
        else:
            value = None
        table[column.name] = [value] * count
    return conform(table, columns)


def warm_sizes(max_batch_rows: int) -> list[int]:
    """Batch sizes that compile every padded chunk size up to ``max_batch_rows``."""
    sizes, size = [1], 16
    while size < max_batch_rows:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_rows)
    return sorted(set(sizes))


def warm_up(model, columns: tuple[InputColumn, ...], max_batch_rows: int) -> float:
    """Predict example rows at each batch size; returns the seconds it took."""
    started = time.perf_counter()
    for count in warm_sizes(max_batch_rows):
        model.predict(example_rows(columns, count).to_frame())
    seconds = time.perf_counter() - started
    logger.info("model warmed up in %.1f s (batches up to %d rows)", seconds, max_batch_rows)
    return seconds


def _tiny_image() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()
