"""What a network is: the architecture description and builder, its receptive fields, the
model bundle and its ONNX graph, and the registry of shipped and last-trained models."""
