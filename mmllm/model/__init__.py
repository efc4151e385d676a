"""The model: media tokens (encoders -> projectors -> packing) read by a decoder through gated
cross-attention. ``multimodal.MultimodalLM`` wires the parts; each file here is one part."""
