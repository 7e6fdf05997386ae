"""Offline benchmark data: every data set here is built from files that ship inside installed packages."""
