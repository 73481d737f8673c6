"""What fidelity each trial gets under a time budget: the plan, its ladder of rungs, the finals,
their ensemble and the retraining on all data."""
