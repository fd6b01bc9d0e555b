"""The eval harness, one concern a module: ``datasets`` (question sets and BEIR folders, validated), ``metrics``
(pure functions of plain data), ``runners`` (each question's record, cached under an honest fingerprint),
``suites`` (what `rag eval run|retrieval|answers` measure) and ``report`` (tables, plots, results.json)."""
