"""The study: every claim of the seed answer as a measured experiment."""
