"""Where artifact files and their sidecars live: a local directory or an S3-compatible bucket."""
