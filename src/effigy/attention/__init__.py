"""Attention processors for diffusers transformers: DiTFastAttn's window + residual cache, step and
CFG sharing, and the calibrated plan search."""
from effigy.attention.plan import TECHNIQUES, AttentionPlan
from effigy.attention.processor import FastAttnState, apply_ditfastattn, remove_ditfastattn
from effigy.attention.search import METRICS, calibrate_plan
from effigy.errors import PlanError

__all__ = ["METRICS", "TECHNIQUES", "AttentionPlan", "FastAttnState", "PlanError", "apply_ditfastattn",
           "calibrate_plan", "remove_ditfastattn"]
