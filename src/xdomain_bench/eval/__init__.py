"""eval: retrieval metrics (PROTOCOLS.md §7-8), exact stable ranking, and the `eval-embeddings` command.

Public entry points (import from the submodules; this package imports nothing heavy):

- `engine.evaluate_class_retrieval(query, query_labels, gallery, gallery_labels, metrics, ...)`
- `engine.evaluate_scores(scores, query_labels, gallery_labels, metrics, ...)` (precomputed scores)
- `similarity.similarity_matrix(query, gallery, similarity)` (the scores the engine ranks by)
- `itr.evaluate_image_text(image_emb, text_emb, text_owner, texts, ...)`
- `metrics.parse_metric(name)` / `metrics.parse_metrics(names)`
- `torchmetric.RetrievalMetrics(metrics, same_set=..., similarity=...)` (torchmetrics, DDP-safe)
"""
