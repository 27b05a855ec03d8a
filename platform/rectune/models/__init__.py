"""The fused multi-task model: encoders per modality, fusion, multi-task architectures and loss
weightings, each a plug-in behind its registry (``model.fusion``, ``model.mtl``, ``loss.weighting``)."""
