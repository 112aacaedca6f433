"""Attribute-aware embeddings (ASEN / RPF style): one embedding space per attribute.

"Same sleeve length as this photo" needs a similarity that looks at the sleeves and ignores the
colour; a global embedding mixes everything. Following ASEN (Ma et al., AAAI 2020), an embedding
of the attribute guides a spatial attention over the backbone's feature map (where on the garment
to look) and a channel attention (which features matter); the result is projected and
L2-normalised: one vector per (image, attribute). RPF's foreground/background contrast is not
implemented: the datasets here have no masks, and catalogue photos are mostly on plain backgrounds.

``vestis train`` with ``kind: attributes`` (:class:`vestis.train.config.AttributeRunConfig`) runs
it through the shared run, trainer and export. One module per part:

- :mod:`~vestis.train.attributes.embedder`: the model (:class:`AttributeEmbedder`), its residual
  start from the backbone's global embedding;
- :mod:`~vestis.train.attributes.loss`: the attribute-specific triplet loss;
- :mod:`~vestis.train.attributes.features`: the cached feature maps and the labelled
  (item, attribute) pairs;
- :mod:`~vestis.train.attributes.task`: the trainer's task over those pairs;
- :mod:`~vestis.train.attributes.evaluation`: embedding items and the attribute MAP test;
- :mod:`~vestis.train.attributes.export`: the ONNX export read by
  :mod:`vestis.encoders.attribute_encoder`;
- :mod:`~vestis.train.attributes.run`: the attribute model as a kind of run
  (:class:`AttributeModel`, for :func:`vestis.train.command.run`).
"""
