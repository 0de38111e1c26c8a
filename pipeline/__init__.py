"""Every stage from data to ONNX bundle (`python -m pipeline`, what `make demo` runs).

It sits above the packages whose stages it runs (train, export), so none of them imports it.
"""
