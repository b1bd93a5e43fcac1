"""zerospeech-api: the backend of the Zero Resource Speech challenge."""

__version__ = "0.1.0"
