"""Trained models as files: reading and writing model files, embedding with them, exporting them, importing published
weights."""
