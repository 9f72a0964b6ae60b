"""The validate stage: chain facts in, verdicts and versioned Lance datasets out.

```
Kafka chain facts (bounded offset ranges)
  -> ReadFacts            decode; undecodable -> dead letters
  -> ResolveDatanets      DatanetCreated -> limits + spec (side input)
  -> CheckAndSketch       fetch, hash, size, UTF-8, format, near-empty; normalize + MinHash (per chunk)
  -> DecidePerDatanet     chain order vs. the datanet's whole history: retracted, exact, near-duplicate
  -> StageOutputs         verdicts, rows, history segments, dead letters (files of one run)
then, outside the pipeline (run.py): produce verdicts + DLQ, commit one Lance version per datanet
tagged with the run, advance the checkpoint.
```
Modules: ``config`` parameters · ``reasons`` reason codes · ``facts`` decoding · ``datanet_info``
datanet rules · ``rules`` per-contribution checks · ``sketch`` normalization and MinHash ·
``candidates`` a checked chunk · ``state`` dedupe history · ``dedupe`` decisions · ``verdict`` verdict
records · ``pipeline`` the Beam transforms · ``checkpoint`` offsets and run journal · ``materialize``
Lance versions · ``run`` the entry point ``validate_new_offsets``.
"""
