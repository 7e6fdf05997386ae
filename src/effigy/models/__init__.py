"""Model zoo: builders for the project's own small models, training commands, and loaders for shipped weights."""
