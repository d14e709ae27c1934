"""Independent reference implementations (other frameworks) that fakedet's models are checked
against in parity tests; test-only, never imported by the package."""
