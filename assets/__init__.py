"""Dagster assets: the operator's view of the loop, one module per area of the graph.

chain_events -> contribution_verdicts -> datanet_datasets -> lora_adapters -> influence_scores
-> reward_epochs -> onchain_payouts, and audit_tables over all of them. Each asset is a few lines that
call into a stage in ``pipelines/`` and report what an operator reads (counts, versions, plots).
"""
