"""fakedet: face-forgery detectors that learn from unlabelled real talking-face video."""

__version__ = "0.1.0"
