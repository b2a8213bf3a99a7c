"""Whole-network conversion: ``expand_model`` / ``contract_model`` / ``init_from_nonlinear`` /
``plan_expansion`` (``model``), the plan's records (``plan``) and ``complexity`` (parameters and
multiply-adds of compact, expanded and fused networks)."""
