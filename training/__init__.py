"""Training and evaluation of emotion models from features tables (Spark-free).

The Spark jobs read the features table, hand a pandas DataFrame to :mod:`training.protocol` or
:mod:`training.evaluate`, and the model travels as a bundle directory (:mod:`training.bundle.load`).
"""
