"""Helpers above data and below evaluation: drawing (``visualizer``), shared by compare's overlays,
``box2seg predict`` and ``box2seg visualize``."""
