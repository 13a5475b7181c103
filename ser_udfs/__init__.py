"""Pure NumPy audio, corpus and feature code for ser-spark, plus thin Spark wrappers."""
