"""The audit database's tables and views: one place that fixes every column's name and type.

Token amounts are DECIMAL(38,0) (whole token units, wei): exact, summable, never float. Join keys are
named alike in every table: ``contribution_id``, ``event_id`` (a chain fact), ``tx_hash``, ``epoch_id``,
``adapter_id``, ``datanet_id`` + ``dataset_version``. Every column is described in docs/audit.md.
"""

from __future__ import annotations

AMOUNT = "DECIMAL(38,0)"

TABLES: dict[str, str] = {
    "chain_events": f"""
        event_id VARCHAR PRIMARY KEY, event_type VARCHAR NOT NULL, chain_id BIGINT NOT NULL,
        block_number BIGINT NOT NULL, block_hash VARCHAR NOT NULL, tx_hash VARCHAR NOT NULL,
        log_index BIGINT NOT NULL, contract VARCHAR NOT NULL, datanet_id BIGINT, contribution_id BIGINT,
        epoch_id BIGINT, account VARCHAR, amount {AMOUNT}, retracted BOOLEAN NOT NULL,
        log_partition BIGINT NOT NULL, log_offset BIGINT NOT NULL""",
    "datanets": f"""
        datanet_id BIGINT PRIMARY KEY, owner VARCHAR NOT NULL, metadata_uri VARCHAR NOT NULL,
        min_stake {AMOUNT} NOT NULL, max_contribution_size BIGINT NOT NULL, permissioned BOOLEAN NOT NULL,
        validators VARCHAR[] NOT NULL, event_id VARCHAR NOT NULL, tx_hash VARCHAR NOT NULL,
        block_number BIGINT NOT NULL""",
    "access_grants": """
        event_id VARCHAR PRIMARY KEY, datanet_id BIGINT NOT NULL, builder VARCHAR NOT NULL, tx_hash VARCHAR NOT NULL,
        block_number BIGINT NOT NULL, requested_event_id VARCHAR, revoked_event_id VARCHAR, revoked_tx_hash VARCHAR,
        revoked_block_number BIGINT, live BOOLEAN NOT NULL""",
    "contributions": f"""
        contribution_id BIGINT PRIMARY KEY, datanet_id BIGINT NOT NULL, contributor VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL, uri VARCHAR NOT NULL, size BIGINT NOT NULL, stake {AMOUNT} NOT NULL,
        event_id VARCHAR NOT NULL, tx_hash VARCHAR NOT NULL, block_number BIGINT NOT NULL,
        block_hash VARCHAR NOT NULL, retracted BOOLEAN NOT NULL""",
    "verdicts": """
        verdict_id VARCHAR PRIMARY KEY, contribution_id BIGINT NOT NULL, datanet_id BIGINT NOT NULL,
        contributor VARCHAR NOT NULL, status VARCHAR NOT NULL, reason VARCHAR, duplicate_of BIGINT,
        similarity DOUBLE, penalize BOOLEAN NOT NULL, detail VARCHAR NOT NULL, event_id VARCHAR NOT NULL,
        fact_block_hash VARCHAR NOT NULL, rules_version VARCHAR NOT NULL, is_current BOOLEAN NOT NULL,
        log_partition BIGINT NOT NULL, log_offset BIGINT NOT NULL""",
    "dead_letters": """
        topic VARCHAR NOT NULL, log_partition BIGINT NOT NULL, log_offset BIGINT NOT NULL, event_id VARCHAR,
        source VARCHAR, origin VARCHAR, error VARCHAR NOT NULL, raw VARCHAR,
        PRIMARY KEY (topic, log_partition, log_offset)""",
    "dataset_versions": """
        datanet_id BIGINT NOT NULL, dataset_version BIGINT NOT NULL, run_id VARCHAR, offsets VARCHAR,
        verdict_digest VARCHAR, num_rows BIGINT NOT NULL, committed_at TIMESTAMP,
        PRIMARY KEY (datanet_id, dataset_version)""",
    "dataset_contributions": """
        datanet_id BIGINT NOT NULL, dataset_version BIGINT NOT NULL, contribution_id BIGINT NOT NULL,
        verdict_id VARCHAR NOT NULL, event_id VARCHAR NOT NULL,
        PRIMARY KEY (datanet_id, dataset_version, contribution_id)""",
    "training_runs": """
        adapter_id VARCHAR PRIMARY KEY, datanet_id BIGINT NOT NULL, dataset_version BIGINT NOT NULL,
        dataset_fingerprint VARCHAR NOT NULL, base_model VARCHAR NOT NULL, base_model_hash VARCHAR NOT NULL,
        training_arguments VARCHAR NOT NULL, eval_source VARCHAR NOT NULL, num_train_examples BIGINT NOT NULL,
        num_eval_queries BIGINT NOT NULL, metrics VARCHAR NOT NULL, final_loss DOUBLE, access_grant VARCHAR""",
    "influence_scores": """
        contribution_id BIGINT NOT NULL, adapter_id VARCHAR NOT NULL, method VARCHAR NOT NULL,
        datanet_id BIGINT NOT NULL, dataset_version BIGINT NOT NULL, contributor VARCHAR NOT NULL,
        content_hash VARCHAR NOT NULL, score DOUBLE NOT NULL, rank INTEGER NOT NULL, copies INTEGER NOT NULL,
        trained BOOLEAN NOT NULL, harmful BOOLEAN NOT NULL,
        helped_queries STRUCT(query_id VARCHAR, score DOUBLE)[] NOT NULL,
        hurt_queries STRUCT(query_id VARCHAR, score DOUBLE)[] NOT NULL,
        score_low DOUBLE NOT NULL, score_high DOUBLE NOT NULL, checkpoint_scores DOUBLE[] NOT NULL,
        robust_z DOUBLE NOT NULL, refit_delta DOUBLE, refit_spread DOUBLE,
        lds DOUBLE, lds_subsets INTEGER, canary_commitment VARCHAR, canary BOOLEAN, canary_auc DOUBLE,
        PRIMARY KEY (contribution_id, adapter_id, method)""",
    "reward_epochs": f"""
        epoch_id BIGINT PRIMARY KEY, merkle_root VARCHAR NOT NULL, total {AMOUNT} NOT NULL,
        pool {AMOUNT} NOT NULL, carry_in {AMOUNT} NOT NULL, carry_out {AMOUNT} NOT NULL, accounts BIGINT NOT NULL,
        slash_requests BIGINT NOT NULL, inputs_digest VARCHAR NOT NULL, rules VARCHAR NOT NULL,
        params VARCHAR, params_block BIGINT,
        method VARCHAR, influence_runs VARCHAR[] NOT NULL, closed_event_id VARCHAR NOT NULL,
        allocation_source VARCHAR NOT NULL,
        published BOOLEAN NOT NULL, publish_event_id VARCHAR, publish_tx_hash VARCHAR,
        published_root VARCHAR, published_total {AMOUNT}, usage_fees {AMOUNT} NOT NULL,
        usage_carry_in {AMOUNT} NOT NULL, usage_carry_out {AMOUNT} NOT NULL, usage_events BIGINT NOT NULL,
        usage_root VARCHAR NOT NULL""",
    "account_payouts": f"""
        epoch_id BIGINT NOT NULL, account VARCHAR NOT NULL, leaf_index BIGINT NOT NULL, amount {AMOUNT} NOT NULL,
        allocated_event_id VARCHAR NOT NULL, claimed BOOLEAN NOT NULL, claim_event_id VARCHAR,
        claim_tx_hash VARCHAR, claimed_amount {AMOUNT}, claim_block_number BIGINT,
        PRIMARY KEY (epoch_id, account)""",
    "usage_payouts": f"""
        allocated_event_id VARCHAR PRIMARY KEY, epoch_id BIGINT NOT NULL, usage_event_id VARCHAR NOT NULL,
        account VARCHAR NOT NULL, role VARCHAR NOT NULL, contribution_id BIGINT, datanet_id BIGINT,
        adapter_id VARCHAR, amount {AMOUNT} NOT NULL, claim_tx_hash VARCHAR""",
    "payouts": f"""
        epoch_id BIGINT NOT NULL, contribution_id BIGINT NOT NULL, account VARCHAR NOT NULL,
        datanet_id BIGINT NOT NULL, dataset_version BIGINT, adapter_id VARCHAR, method VARCHAR,
        influence DOUBLE NOT NULL, reputation_ppb BIGINT NOT NULL, outcome VARCHAR NOT NULL,
        amount {AMOUNT} NOT NULL, event_id VARCHAR, tx_hash VARCHAR,
        PRIMARY KEY (epoch_id, contribution_id)""",
    "slash_requests": """
        epoch_id BIGINT NOT NULL, contribution_id BIGINT NOT NULL, datanet_id BIGINT NOT NULL,
        contributor VARCHAR NOT NULL, reason_code BIGINT NOT NULL, reason VARCHAR NOT NULL,
        requested_event_id VARCHAR NOT NULL, score DOUBLE, score_low DOUBLE, score_high DOUBLE, robust_z DOUBLE,
        refit_delta DOUBLE, refit_spread DOUBLE, PRIMARY KEY (epoch_id, contribution_id)""",
    "reward_tx_states": """
        event_id VARCHAR PRIMARY KEY, epoch_id BIGINT NOT NULL, chain_id BIGINT NOT NULL,
        distributor VARCHAR NOT NULL, step VARCHAR NOT NULL, state VARCHAR NOT NULL, sender VARCHAR,
        nonce BIGINT, tx_hash VARCHAR, block_number BIGINT, detail VARCHAR NOT NULL, log_offset BIGINT NOT NULL""",
    "usage_events": """
        usage_event_id VARCHAR PRIMARY KEY, request_id VARCHAR NOT NULL, model VARCHAR NOT NULL,
        adapter_ids VARCHAR[] NOT NULL, datanet_ids BIGINT[] NOT NULL, base_model_hash VARCHAR NOT NULL,
        prompt_tokens BIGINT NOT NULL, completion_tokens BIGINT NOT NULL, latency_ms DOUBLE NOT NULL, caller VARCHAR,
        finish_reason VARCHAR NOT NULL, sources BIGINT NOT NULL, answer VARCHAR, served_at_ms BIGINT NOT NULL,
        attribution VARCHAR, attribution_reason VARCHAR, agent VARCHAR, log_partition BIGINT NOT NULL,
        log_offset BIGINT NOT NULL""",
    "citations": """
        usage_event_id VARCHAR NOT NULL, marker BIGINT NOT NULL, contribution_id BIGINT NOT NULL,
        datanet_id BIGINT NOT NULL, contributor VARCHAR NOT NULL, chunk_id VARCHAR NOT NULL,
        dataset_version BIGINT NOT NULL, retrieval_score DOUBLE NOT NULL, weight DOUBLE,
        attribution_event_id VARCHAR, PRIMARY KEY (usage_event_id, marker)""",
}

# Views: derived in SQL from the tables above, so they can never disagree with them.
VIEWS: dict[str, str] = {
    "grant_trainings": """
        SELECT g.event_id AS grant_event_id, g.datanet_id, g.builder, g.block_number AS granted_block_number,
               g.revoked_block_number, g.live, t.adapter_id, t.dataset_version
        FROM access_grants g LEFT JOIN training_runs t ON t.access_grant = g.event_id""",
    "slashes": """
        SELECT coalesce(e.contribution_id, r.contribution_id) AS contribution_id,
               coalesce(e.datanet_id, r.datanet_id) AS datanet_id, r.epoch_id, r.reason_code AS requested_reason_code,
               r.reason AS requested_reason, r.requested_event_id, e.event_id, e.tx_hash, e.block_number,
               e.account AS validator, e.amount, e.retracted, r.score, r.score_high, r.refit_delta, r.refit_spread
        FROM slash_requests r
        FULL OUTER JOIN (SELECT * FROM chain_events WHERE event_type = 'StakeSlashed') e
          ON e.contribution_id = r.contribution_id""",
    "chain_txs": """
        SELECT tx_hash, 'chain_fact' AS source, min(block_number) AS block_number,
               string_agg(DISTINCT event_type, ',' ORDER BY event_type) AS kinds, NULL::BIGINT AS epoch_id,
               NULL AS step, NULL AS state, NULL AS sender, NULL::BIGINT AS nonce, count(*) AS events,
               bool_and(retracted) AS retracted
        FROM chain_events GROUP BY tx_hash
        UNION ALL
        SELECT s.tx_hash, 'emitter', s.block_number, NULL, s.epoch_id, s.step, s.state, s.sender, s.nonce,
               (SELECT count(*) FROM chain_events e WHERE e.tx_hash = s.tx_hash), NULL
        FROM reward_tx_states s
        WHERE s.tx_hash IS NOT NULL AND s.log_offset = (
            SELECT max(t.log_offset) FROM reward_tx_states t
            WHERE t.epoch_id = s.epoch_id AND t.tx_hash = s.tx_hash)""",
}


def create_statements() -> list[str]:
    """DDL of the whole database, tables first, then the views over them."""
    tables = [f"CREATE TABLE {name} ({columns})" for name, columns in TABLES.items()]
    return tables + [f"CREATE VIEW {name} AS {query}" for name, query in VIEWS.items()]
