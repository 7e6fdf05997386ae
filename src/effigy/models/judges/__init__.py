"""The judges that score generated samples: the digits classifier, the shapes attribute checker and the
CLIP-score stand-in."""
