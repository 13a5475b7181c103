"""Thin ``spark-submit`` entry points of ser-spark."""
