"""What picks and runs a study's trials in one process: the Optuna pool or Keras Tuner, each an
:class:`~search.engines._base.Engine` over the same trial lifecycle."""
