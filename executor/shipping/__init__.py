"""The user's code (and pilot's worker runtime) as content-addressed tarballs."""
