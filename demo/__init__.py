"""The deployable, TensorFlow-free part of the captioner.

It owns everything that training, export and serving must agree on (image
preprocessing, the vocabulary file format, caption search), so that there is
exactly one implementation of each. Nothing here may import TensorFlow, Keras
or tf2onnx.
"""
