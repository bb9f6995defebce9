"""MLflow "models from code" entry: MLflow runs this file to build the pyfunc model, so no
pickled Python object is stored with the model."""

import mlflow

from deepspark.tracking.pyfunc import DeepsparkPyfunc

mlflow.models.set_model(DeepsparkPyfunc())
