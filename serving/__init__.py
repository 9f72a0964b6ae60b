"""The online half of the loop: payable's OpenAI-compatible server for every datanet's LoRA adapters.

One base model, many adapters (DESIGN.md, the loop's usage half). Modules, one job each:

- ``adapter_source``: where an adapter id's PEFT folder and lineage are (the registry behind one function);
- ``lora``: reading a PEFT folder into LoRA factors, and merging factors for ensembles;
- ``punica``: the batched gather-matmul (BGMV in torch ops) over a slot table of resident adapters;
- ``model``: the base model's forward with a KV cache and per-row adapters;
- ``batcher``: continuous batching (requests join between decode steps, finished ones leave);
- ``cache``: the LRU of loaded adapters (count and byte bounds, pinning, counters);
- ``engine``: model names to adapters, prompts to token streams, finished requests to usage events;
- ``usage``: the buffered, retrying writer of usage events to Kafka;
- ``protocol`` and ``api/``: the OpenAI request/response shapes and the HTTP endpoints;
- ``web``, ``contributions`` and ``static/``: the chat page at ``/`` and the contribution details it links to.
"""
