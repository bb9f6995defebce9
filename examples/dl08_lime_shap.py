"""DL 08 - Model interpretability on tables: SHAP and LIME.

The course explains a housing model with SHAP's kernel explainer and LIME's tabular explainer.
``deepspark.explain`` runs both on the raw columns (a categorical column's one-hot features summed
back to it), writes the attributions, plots and an ``index.html``, and logs them as a child run
of the model's MLflow run.

Command line equivalent::

    deepspark explain --model models:/m-... --data houses.csv --method kernel --rows 20 \
        --output why/ --json
    deepspark explain --model models:/m-... --data houses.csv --method lime --output lime/

Run: ``python examples/dl08_lime_shap.py [--tiny] [--data PATH] [--output DIR]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 08: SHAP and LIME on a tabular model.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, 3 rows explained")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    parser.add_argument("--output", default="lab-output/dl08")
    args = parser.parse_args(argv)

    import pandas as pd

    import deepspark

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(300, random_state=0)
    result = deepspark.train(
        frame,
        TARGET,
        model="mlp",
        hidden=(32, 16),
        epochs=2 if args.tiny else 50,
        run_name="dl08-explained",
    )

    rows = 3 if args.tiny else 20
    features = frame.drop(columns=[TARGET])
    figures = {"lab": "DL08", "run_id": result.run_id, "test_rmse": result.metrics["test_rmse"]}
    for method, options in (
        ("kernel", {"nsamples": 64 if args.tiny else 500}),  # SHAP's KernelExplainer
        ("lime", {"num_samples": 200 if args.tiny else 2000}),  # LIME tabular
    ):
        explanation = deepspark.explain(
            result.model_uri,
            features,
            method=method,
            rows=rows,
            background=20 if args.tiny else 100,
            options=options,
            output=output / method,
            overwrite=True,
        )
        # Mean |attribution| per raw column: the global importance the course plots.
        importance = explanation.explanation.attributions.abs().mean().sort_values()
        figures[method] = {
            "rows": explanation.summary["rows"],
            "max_additivity_error": explanation.summary["max_additivity_error"],
            "top_feature": str(importance.index[-1]),
            "importance": {str(name): float(value) for name, value in importance.items()},
            "outputs": explanation.outputs,
            "files": sorted(path.name for path in (output / method).iterdir()),
        }
    print(json.dumps(figures, default=str))
    return figures


if __name__ == "__main__":
    main()
