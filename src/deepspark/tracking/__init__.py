"""MLflow: the run context, the pyfunc model artifact, the model loader, run listings."""
