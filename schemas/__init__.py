"""Every event and table schema of payable, in one place, versioned.

``schemas.events`` holds the Kafka event types (chain facts and pipeline decisions) as pyarrow schemas,
with their topics, keys and headers; later stages add their table schemas beside it.
"""
