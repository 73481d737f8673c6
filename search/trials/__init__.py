"""One trial: the space it suggests from (narrowed, fixed, or wrapped for fine-tuning and
pretrained backbones), its training at the fidelity asked, and its record."""
