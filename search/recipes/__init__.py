"""Runs built from known starting points: a source recipe reproduced as published, a registered
model fine-tuned over a grid."""
