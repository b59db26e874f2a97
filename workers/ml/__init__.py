"""Machine learning on the workers: image features, DBSCAN clean-up, near-duplicate hashing.

Nothing here imports TensorFlow at module level; the Keras extractor loads it only when used.
"""
