"""Judging a study's best model on the test set and registering it (alias ``champion`` or
``challenger``), calibrated, with its provenance."""
