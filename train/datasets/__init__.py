"""Dataset loaders: each reads one real-world layout into a `LoadedDataset`."""
