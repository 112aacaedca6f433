"""Evaluation: retrieval and classification metrics, evaluation protocols and reports."""

from vestis.eval.metrics import (
    accuracy_top_k,
    ann_recall_at_k,
    average_precision,
    average_precision_at_k,
    confusion_matrix,
    knn_classify,
    map_at_k,
    ndcg_at_k,
    per_class_accuracy,
    precision_at_k,
    recall_at_k,
    retrieval_metrics,
)
from vestis.eval.protocols import (
    attribute_map,
    group_labels,
    knn_accuracy,
    leave_one_out,
    load_split,
    query_gallery,
    rank,
    relevance,
    save_split,
    score_ranking,
    split_by_id,
)
from vestis.eval.report import write_report

__all__ = [
    "accuracy_top_k", "ann_recall_at_k", "attribute_map", "average_precision", "average_precision_at_k",
    "confusion_matrix", "group_labels", "knn_accuracy", "knn_classify", "leave_one_out", "load_split",
    "map_at_k", "ndcg_at_k", "per_class_accuracy", "precision_at_k", "query_gallery", "rank", "recall_at_k",
    "relevance", "retrieval_metrics", "save_split", "score_ranking", "split_by_id", "write_report",
]
