"""torch side of ``deepspark.runtime``: eager calls under ``inference_mode`` / autograd."""

from __future__ import annotations

import numpy as np


def forward(model, inputs, *, rows: int, batch_rows: int) -> np.ndarray:
    import torch

    # Even chunks: 10,000 rows run as 2 x 5,000, not 8,192 + a small, inefficient 1,808.
    batch_rows = -(-rows // max(1, -(-rows // batch_rows)))
    outputs = []
    with torch.inference_mode():
        for start in range(0, rows, batch_rows):
            if isinstance(inputs, dict):
                chunk = {
                    name: torch.from_numpy(np.ascontiguousarray(values[start : start + batch_rows]))
                    for name, values in inputs.items()
                }
            else:
                chunk = torch.from_numpy(np.ascontiguousarray(inputs[start : start + batch_rows]))
            outputs.append(model(chunk, training=False).detach().cpu().numpy())
    return np.concatenate(outputs, axis=0)


def input_gradients(model, points: np.ndarray, columns: np.ndarray) -> np.ndarray:
    import torch

    batch = torch.from_numpy(points).requires_grad_(True)
    with torch.enable_grad():
        output = model(batch, training=False)
        chosen = output.gather(1, torch.from_numpy(columns.astype(np.int64)).view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(chosen, batch)
    return gradient.double().numpy()


def set_threads(count: int) -> None:
    import torch

    torch.set_num_threads(count)


def release_compiled_programs() -> bool:
    return False  # eager: nothing compiled is kept


def framework_versions() -> dict[str, str]:
    import torch

    return {"torch": torch.__version__}
