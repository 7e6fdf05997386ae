"""Face anti-spoofing (arXiv 2503.22984): the prototype base model, its optimal-transport test-time adaptors
and their baselines. Importing it registers the ``fas-protonet`` models in the zoo."""
from effigy.detect.fas import zoo as _zoo  # noqa: F401  (registers the fas-protonet models)
