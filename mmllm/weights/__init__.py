"""Weights in and out: checkpoints, pretrained parts and their conversion, LoRA merging, and
``mmllm build`` (a model assembled from pretrained encoders and a pretrained LM)."""
