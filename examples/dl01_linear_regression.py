"""DL 01 - Linear regression: the simplest network, one Dense unit, on California housing.

The course starts with a linear model (one neuron, no activation) and compares it with
scikit-learn's closed-form least squares. deepspark's ``model="linear"`` is exactly that network,
with the preprocessing (imputation, scaling, one-hot) inside the model, and reports the fitted
weights back in the raw columns' units.

Command line equivalent::

    deepspark train --data ../shared/data/california_housing.csv \
        --target median_house_value --model linear --json

Run: ``python examples/dl01_linear_regression.py [--tiny] [--data PATH]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TARGET = "median_house_value"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="DL 01: linear regression with deepspark.")
    parser.add_argument("--tiny", action="store_true", help="a few hundred rows, a few epochs")
    parser.add_argument("--data", default=str(SHARED_DATA / "california_housing.csv"))
    args = parser.parse_args(argv)

    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    import deepspark

    frame = pd.read_csv(args.data)
    if args.tiny:
        frame = frame.sample(400, random_state=0)

    # One Dense unit on the scaled, one-hot-encoded columns, trained by gradient descent.
    result = deepspark.train(
        frame,
        TARGET,
        model="linear",
        epochs=5 if args.tiny else 200,
        lr=0.05,
        run_name="dl01-linear",
    )

    # The closed-form answer for comparison (numeric columns, medians for the missing values).
    numeric = frame.drop(columns=[TARGET]).select_dtypes("number")
    numeric = numeric.fillna(numeric.median())
    closed_form = LinearRegression().fit(numeric, frame[TARGET])
    closed_form_rmse = float(np.sqrt(np.mean((closed_form.predict(numeric) - frame[TARGET]) ** 2)))

    figures = {
        "lab": "DL01",
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "test_rmse": result.metrics["test_rmse"],
        "val_rmse": result.metrics["val_rmse"],
        # y = sum(coefficient * raw value) + intercept, in dollars per unit of each column.
        "coefficients": result.coefficients,
        "intercept": result.intercept,
        "sklearn_train_rmse": closed_form_rmse,
        "sklearn_median_income_coefficient": float(
            closed_form.coef_[list(numeric.columns).index("median_income")]
        ),
    }
    print(json.dumps(figures, default=float))
    return figures


if __name__ == "__main__":
    main()
