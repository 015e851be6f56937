"""Box2Seg modeling: backbone, decoders, the meta-architecture, and the box-derived targets and losses
(``box2seg.modeling.targets``, ``box2seg.modeling.losses``)."""
