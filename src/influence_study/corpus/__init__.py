"""The training corpora: the generated synthetic world and loaders for a user's own documents."""
