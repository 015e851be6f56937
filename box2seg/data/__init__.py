"""Data: box-annotated datasets, GrabCut pseudo-labels, and the mapper that turns both into targets."""
