"""The Optuna side of fmsearch: studies, the MLflow bridge, promotion, and the CLI."""
