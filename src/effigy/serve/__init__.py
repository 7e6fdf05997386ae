"""The HTTP detection service (``effigy serve``): FastAPI, localhost by default."""
