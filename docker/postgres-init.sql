-- The MLflow server's database, beside Optuna's (POSTGRES_DB=optuna).
CREATE DATABASE mlflow;
