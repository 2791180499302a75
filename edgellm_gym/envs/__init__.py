"""The environments, one module each, thin over the shared core."""
