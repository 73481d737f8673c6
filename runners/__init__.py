"""How one trial trains and is measured: data, the fit loop, metrics.

``runners`` never imports ``search`` and never talks to Optuna storage or MLflow.
"""
