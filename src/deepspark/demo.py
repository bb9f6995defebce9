"""``make demo``: the main job, offline, on embedded defaults.

Trains on the bundled diabetes table, evaluates on the held-out test split once, logs everything to
MLflow's default store in this folder, scores a file with the logged model, trains a small CNN on
generated images and scores them with Spark, and says where to look.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

OUTPUT = Path("demo-output")


def main() -> None:
    from deepspark.cli.output import configure_logging

    configure_logging(quiet=False)
    log = logging.getLogger("deepspark.demo")

    import mlflow

    import deepspark
    from deepspark.data.readers import read_table

    OUTPUT.mkdir(exist_ok=True)
    log.info("1/7 training on the bundled 'diabetes' table (70/15/15 split)")
    result = deepspark.train(
        "diabetes", hidden=(64, 32), dropout=0.1, batch_size=32, run_name="demo-diabetes"
    )
    log.info("2/7 scoring a file with the logged model")
    to_score = OUTPUT / "diabetes_to_score.csv"
    read_table("diabetes").drop(columns="disease_progression").to_csv(to_score, index=False)
    scored_path = OUTPUT / "diabetes_scored.csv"
    scored = deepspark.predict(result.model_uri, to_score, output=scored_path, overwrite=True)
    log.info("3/7 Spark: scoring the same file with the UDF, then with a SQL query")
    spark_scored, sql_rows = _spark_step(result.model_uri, to_score)
    log.info("4/7 the same network on 2 data-parallel workers (local launcher, 3 epochs)")
    distributed = deepspark.train(
        "diabetes",
        hidden=(64, 32),
        batch_size=16,
        epochs=3,
        workers=2,
        launcher="local",
        run_name="demo-diabetes-2-workers",
    )
    log.info("5/7 explaining 50 rows with integrated gradients (raw columns)")
    explanation = deepspark.explain(
        result.model_uri,
        to_score,
        method="gradient",
        rows=50,
        output=OUTPUT / "explanation",
        overwrite=True,
    )
    log.info(
        "6/7 images: a small CNN on 300 generated images (2 epochs), scored with Spark, "
        "one Grad-CAM overlay"
    )
    images, image_result, image_summary, cams = _image_step()
    log.info("7/7 done")

    uri = mlflow.get_tracking_uri()
    lines = [
        "",
        "deepspark demo",
        f"  run id        {result.run_id}  ({_epochs_line(result)})",
        f"  model uri     {result.model_uri}",
        f"  test metrics  RMSE {result.metrics['test_rmse']:.2f}  MAE "
        f"{result.metrics['test_mae']:.2f}  R2 {result.metrics['test_r2']:.3f}  "
        f"(scored once, on {result.rows['test']} held-out rows)",
        f"  scored file   {scored_path} ({len(scored)} rows, column 'prediction')",
        f"  spark         {spark_scored} (Parquet); SQL: {sql_rows}",
        f"  explanation   {explanation.outputs['index_html']}  (additivity error "
        f"{explanation.summary['max_additivity_error']:.1e} of the prediction spread)",
        f"  2 workers     run {distributed.run_id}: {distributed.epochs_completed} epochs, "
        f"batch 16 per worker, test RMSE {distributed.metrics['test_rmse']:.2f}",
        f"  images        {images}: CNN run {image_result.run_id}, test accuracy "
        f"{image_result.metrics['test_accuracy']:.2f}; Spark: {image_summary}",
        f"  grad-cam      {Path(cams.outputs['overlays']) / 'row0.png'} (layer "
        f"{cams.summary['details']['layer']}; page {cams.outputs['index_html']})",
        f"  tracking      {uri}",
        "",
        "Next:",
        "  deepspark runs                       # runs with status and metrics",
        f"  deepspark predict --model {result.model_uri} --data FILE --output OUT.csv",
        f"  deepspark predict --spark --model {result.model_uri} --data FILE_OR_TABLE "
        "--output OUT_DIR",
        f"  deepspark explain --model {result.model_uri} --data FILE --method kernel --output DIR",
        "  deepspark train --data PHOTOS_FOLDER --model cnn --image-size 64 --augment",
        f"  deepspark visualize --model {image_result.model_uri} --image FILE --output DIR",
        f"  deepspark explain --model {image_result.model_uri} --data FOLDER --method gradcam "
        "--output DIR",
        f"  mlflow ui --backend-store-uri {uri}   # then open http://127.0.0.1:5000",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def _spark_step(model_uri: str, to_score: Path) -> tuple[Path, str]:
    """Score with deepspark's Spark UDF (Parquet out) and through SQL; returns the output folder
    and a one-line summary of the query."""
    from deepspark.spark import get_session
    from deepspark.spark.jobs import score_to_parquet

    spark = get_session("local[2]")
    output = OUTPUT / "diabetes_scored_spark"
    score_to_parquet(str(to_score), model_uri, output=str(output), overwrite=True)
    query = (
        "SELECT round(avg(progression), 1) AS mean, round(max(progression), 1) AS highest "
        "FROM (SELECT diabetes_model(struct(*)) AS progression FROM patients)"
    )
    sql_output = OUTPUT / "diabetes_sql"
    score_to_parquet(
        str(to_score), model_uri, output=str(sql_output), overwrite=True,
        sql=query, function_name="diabetes_model", view="patients",
    )  # fmt: skip
    row = spark.read.parquet(str(sql_output)).first()  # the session stays for the images
    return output, f"mean predicted progression {row['mean']}, highest {row['highest']}"


def _epochs_line(result) -> str:
    """How the first step trained: one network's epochs, or the bagged members' summary (the
    result holds the most epochs a member trained and the median best epoch)."""
    if result.bagging > 1:
        return (
            f"{result.bagging} bagged members: up to {result.epochs_completed} epochs each, "
            f"median best epoch {result.best_epoch}"
        )
    return f"{result.epochs_completed} epochs, best {result.best_epoch}"


def _image_step():
    """Train a small CNN on generated images (stripes vs rings vs dots), explain one image with
    Grad-CAM and score the folder with Spark through binaryFile; returns the folder, the run, a
    one-line summary and the explanation."""
    import deepspark
    from deepspark.spark import get_session
    from deepspark.spark.jobs import score_to_parquet

    folder = _generated_images(OUTPUT / "images")
    result = deepspark.train(
        str(folder), model="cnn", filters=(16, 32), epochs=2, batch_size=16, run_name="demo-cnn"
    )
    cams = deepspark.explain(
        result.model_uri, str(folder), method="gradcam", rows=1, output=OUTPUT / "gradcam",
        overwrite=True,
    )  # fmt: skip
    output = OUTPUT / "images_scored_spark"
    score_to_parquet(str(folder), result.model_uri, output=str(output), overwrite=True)
    spark = get_session("local[2]")
    scored = spark.read.parquet(str(output))
    bad = scored.where("error IS NOT NULL").count()
    summary = f"{scored.count()} files -> {output} ({bad} bad file reported in 'error')"
    spark.stop()
    return folder, result, summary, cams


def _generated_images(folder: Path, per_class: int = 100) -> Path:
    """Noisy 32x32 images of three kinds, plus one file that is not an image (as real folders
    have), written once."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    grid = np.indices((32, 32))
    shapes = {
        "stripes": (grid[0] // 4) % 2 == 0,
        "rings": (np.hypot(grid[0] - 15.5, grid[1] - 15.5).astype(int) // 4) % 2 == 0,
        "dots": ((grid[0] % 8) < 3) & ((grid[1] % 8) < 3),
    }
    for name, mask in shapes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            path = folder / name / f"{index:03d}.png"
            if path.exists():
                continue
            colour = rng.integers(120, 256, size=3)
            pixels = rng.integers(0, 80, size=(32, 32, 3))
            pixels[np.roll(mask, rng.integers(0, 8), axis=rng.integers(0, 2))] = colour
            Image.fromarray(pixels.astype(np.uint8)).save(path)
    (folder / "dots" / "README.jpg").write_text("not an image")
    return folder


if __name__ == "__main__":
    main()
