"""Training side of the captioner: data preparation, VGG16 features, the Keras model."""
