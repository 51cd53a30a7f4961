"""The frame every layer stands on: paths, the validated parameters of a profile, the artifact cache."""
