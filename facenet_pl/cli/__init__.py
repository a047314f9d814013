"""The ``facenet-pl`` command."""
