"""Register models that other tools laid out: MLflow model directories, V2/Triton repositories."""
