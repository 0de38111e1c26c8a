"""ONNX export of the trained encoder and single-step decoder (built in the export issue)."""
