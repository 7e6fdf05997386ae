"""Mixed precision shared by ViDiT-Q-MP, MixDQ and PM-KVQ: sensitivity tables as data, and bit
allocation as an integer program."""
from effigy.mixedprec.allocate import Assignment, allocate, average_bits_budget
from effigy.mixedprec.table import SensitivityTable

__all__ = ["Assignment", "SensitivityTable", "allocate", "average_bits_budget"]
